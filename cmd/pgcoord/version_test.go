package main

import (
	"encoding/json"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/migrations"
)

func TestVersionPrintsModuleAndSchema(t *testing.T) {
	t.Parallel()
	code, out, _ := runCLI(t, "version")
	require.Equal(t, 0, code)
	require.Contains(t, out, "pgcoord ")
	require.Contains(t, out, "schema version "+strconv.FormatInt(migrations.LatestVersion(), 10))

	// With a database: its version too, as JSON.
	db := pgtest.NewDB(t)
	code, out, errOut := runCLI(t, "version", "--json", "--database-url", db.URL)
	require.Equal(t, 0, code, errOut)
	var info versionInfo
	require.NoError(t, json.Unmarshal([]byte(out), &info))
	require.NotEmpty(t, info.Module)
	require.Equal(t, migrations.LatestVersion(), info.Schema)
	require.NotNil(t, info.Database)
	require.Equal(t, migrations.LatestVersion(), *info.Database, "a fresh test database is fully migrated")
}
