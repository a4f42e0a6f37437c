package schema_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/internal/schema"
	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/migrations"
	"github.com/pgcoord/pgcoord/pgcache"
	"github.com/pgcoord/pgcoord/queue"
)

// Every component's Start checks the schema once and fails with the typed
// error, not a raw "relation does not exist" later.
func TestEveryStartChecksSchema(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	_, err := migrations.Down(ctx, db.Pool, &migrations.Options{TargetVersion: 10})
	require.NoError(t, err)

	starts := map[string]func() error{
		"listen": func() error {
			ps, err := listen.New(db.Pool, nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = ps.Close(context.Background()) })
			return ps.Start(ctx)
		},
		"pgcache": func() error {
			m, err := pgcache.NewManager(db.Pool, nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = m.Close(context.Background()) })
			return m.Start(ctx)
		},
		"advisorylock": func() error {
			m, err := advisorylock.New(db.Pool, nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = m.Close(context.Background()) })
			return m.Start(ctx)
		},
		"queue": func() error {
			q, err := queue.New(db.Pool, nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = q.Stop(context.Background()) })
			return q.Start(ctx)
		},
	}
	for name, start := range starts {
		err := start()
		require.ErrorIs(t, err, migrations.ErrSchemaOutdated, name)
		require.ErrorContains(t, err, "is at version 10, this pgcoord needs version", name)
	}
}

// Runtime packages depend on the leaf internal/schema, never on the
// migration machinery (goose, River's migrator, a database/sql driver).
// database/sql itself cannot be excluded: pgx imports it for sql.Scanner
// and driver.Valuer support in pgtype.
func TestRuntimeDepsExcludeMigrations(t *testing.T) {
	t.Parallel()
	forbidden := []string{
		"github.com/pressly/goose",
		"github.com/riverqueue/river/rivermigrate",
		"github.com/riverqueue/river/riverdriver/riverdatabasesql",
		"github.com/jackc/pgx/v5/stdlib",
		"github.com/lib/pq",
		"github.com/pgcoord/pgcoord/migrations",
	}
	for _, pkg := range []string{"internal/schema", "listen", "pgcache", "advisorylock", "queue", "txhooks"} {
		out, err := exec.Command("go", "list", "-deps", "github.com/pgcoord/pgcoord/"+pkg).CombinedOutput()
		require.NoError(t, err, string(out))
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range forbidden {
				require.False(t, dep == f || strings.HasPrefix(dep, f+"/"), "%s depends on %s", pkg, dep)
			}
		}
	}
	// The leaf itself stays pgx-only.
	out, err := exec.Command("go", "list", "-f", `{{join .Imports "\n"}}`, "github.com/pgcoord/pgcoord/internal/schema").CombinedOutput()
	require.NoError(t, err, string(out))
	for _, imp := range strings.Fields(string(out)) {
		require.True(t, !strings.Contains(imp, ".") || imp == "github.com/jackc/pgx/v5", "internal/schema imports %s", imp)
	}
	_ = schema.Default
}
