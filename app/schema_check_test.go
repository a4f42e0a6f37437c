package app_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/migrations"
)

// Start refuses a database whose schema is not the one this build expects,
// with the typed error naming both versions and the command to run, before
// any component or plugin starts.
func TestStartChecksSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, tc := range map[string]struct {
		prepare func(t *testing.T, db *pgtest.DB)
		want    error
		msg     string
	}{
		"empty": {
			prepare: func(t *testing.T, db *pgtest.DB) {
				_, err := migrations.Down(ctx, db.Pool, nil)
				require.NoError(t, err)
			},
			want: migrations.ErrSchemaOutdated, msg: "is at version 0, this pgcoord needs version 16",
		},
		"version 16 rolled back": {
			prepare: func(t *testing.T, db *pgtest.DB) {
				_, err := migrations.Down(ctx, db.Pool, &migrations.Options{TargetVersion: 15})
				require.NoError(t, err)
			},
			want: migrations.ErrSchemaOutdated, msg: "is at version 15, this pgcoord needs version 16",
		},
		"newer pgcoord": {
			prepare: func(t *testing.T, db *pgtest.DB) {
				_, err := db.Pool.Exec(ctx, `INSERT INTO pgcoord.goose_db_version (version_id, is_applied) VALUES (17, true)`)
				require.NoError(t, err)
			},
			want: migrations.ErrSchemaTooNew, msg: "newer than this pgcoord knows (version 16)",
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			db := pgtest.NewDB(t)
			tc.prepare(t, db)
			j := &journal{}
			a := newApp(t, db.Pool, "schemacheck", "i1", &hookPlugin{name: "p", j: j})
			err := a.Start(ctx)
			require.ErrorIs(t, err, tc.want)
			require.ErrorContains(t, err, tc.msg)
			// Start's failure path runs Stop (and so BeforeStop); nothing was loaded.
			require.Equal(t, []string{"p:beforeStop"}, j.list(), "no plugin was loaded")
		})
	}
}
