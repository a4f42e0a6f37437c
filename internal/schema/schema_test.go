package schema_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/internal/schema"
	"github.com/pgcoord/pgcoord/migrations"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"pgcoord", "coord_2", "_x", strings.Repeat("a", 63)} {
		require.NoError(t, schema.Validate(ok), ok)
		require.NoError(t, schema.ValidatePgcoord(ok), ok)
	}
	for _, bad := range []string{"", "Pgcoord", "x; DROP TABLE y", `a"b`, "1abc", "pg_catalog", "has space", strings.Repeat("a", 64)} {
		require.ErrorIs(t, schema.Validate(bad), schema.ErrInvalid, bad)
	}
	require.NoError(t, schema.Validate("public"), "the application's own tables may live in public")
	require.ErrorIs(t, schema.ValidatePgcoord("public"), schema.ErrInvalid)
	// A long name is not echoed back.
	require.NotContains(t, schema.Validate(strings.Repeat("a", 1000)).Error(), strings.Repeat("a", 64))
}

func TestCheck(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	require.NoError(t, schema.Check(ctx, db.Pool, schema.Default))
	require.ErrorIs(t, schema.Check(ctx, db.Pool, "Bad"), schema.ErrInvalid)

	var ve *schema.VersionError
	// The newest version rolled back.
	_, err := migrations.Down(ctx, db.Pool, &migrations.Options{TargetVersion: schema.Version - 1})
	require.NoError(t, err)
	err = schema.Check(ctx, db.Pool, schema.Default)
	require.ErrorIs(t, err, schema.ErrOutdated)
	require.ErrorIs(t, err, migrations.ErrSchemaOutdated)
	require.True(t, errors.As(err, &ve))
	require.EqualValues(t, schema.Version-1, ve.Database)
	require.Equal(t, []int64{schema.Version}, ve.Missing)
	require.ErrorContains(t, err, fmt.Sprintf(`is at version %d, this pgcoord needs version %d`, schema.Version-1, schema.Version))
	require.ErrorContains(t, err, `pgcoord migrate up`)

	// Nothing at all.
	_, err = migrations.Down(ctx, db.Pool, nil)
	require.NoError(t, err)
	err = schema.Check(ctx, db.Pool, schema.Default)
	require.ErrorIs(t, err, schema.ErrOutdated)
	require.ErrorContains(t, err, `is at version 0`)

	// A schema that was never created.
	require.ErrorIs(t, schema.Check(ctx, db.Pool, "nothing_here"), schema.ErrOutdated)
}

func TestCheckTooNew(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	// What a newer pgcoord with one more migration leaves behind.
	_, err := db.Pool.Exec(ctx, `INSERT INTO pgcoord.goose_db_version (version_id, is_applied) VALUES ($1, true)`, schema.Version+1)
	require.NoError(t, err)
	err = schema.Check(ctx, db.Pool, schema.Default)
	require.ErrorIs(t, err, schema.ErrTooNew)
	require.ErrorIs(t, err, migrations.ErrSchemaTooNew)
	require.ErrorContains(t, err, fmt.Sprintf(`is at version %d, newer than this pgcoord knows (version %d)`, schema.Version+1, schema.Version))
}

// River's own CLI rolled River back behind pgcoord's record.
func TestCheckRiverBehind(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	rm, err := rivermigrate.New(riverpgxv5.New(db.Pool), &rivermigrate.Config{Schema: schema.Default})
	require.NoError(t, err)
	_, err = rm.Migrate(ctx, rivermigrate.DirectionDown, &rivermigrate.MigrateOpts{MaxSteps: 1})
	require.NoError(t, err)
	err = schema.Check(ctx, db.Pool, schema.Default)
	require.ErrorIs(t, err, schema.ErrOutdated)
	require.ErrorContains(t, err, "River's own record (river_migration) is at 7")
}
