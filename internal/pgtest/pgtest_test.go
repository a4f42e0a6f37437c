package pgtest_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/migrations"
)

func TestNewDBIsMigratedAndIsolated(t *testing.T) {
	ctx, a := pgtest.Setup(t)
	b := pgtest.NewDB(t)
	require.NotEqual(t, a.Name, b.Name)

	v, err := migrations.Version(ctx, a.Pool, nil)
	require.NoError(t, err)
	require.Equal(t, migrations.LatestVersion(), v)

	_, err = a.Pool.Exec(ctx, `CREATE TABLE only_in_a (id int)`)
	require.NoError(t, err)
	var exists bool
	require.NoError(t, b.Pool.QueryRow(ctx, `SELECT to_regclass('only_in_a') IS NOT NULL`).Scan(&exists))
	require.False(t, exists)
}

func TestSecondPoolAndTerminateBackends(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	other := db.NewPool(t, &pgtest.PoolOptions{AppName: "instance-b", MaxConns: 2})
	require.EqualValues(t, 2, other.Config().MaxConns)

	conn, err := other.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	var app string
	require.NoError(t, conn.QueryRow(ctx, `SELECT current_setting('application_name')`).Scan(&app))
	require.Equal(t, "instance-b", app)

	n, err := db.TerminateBackends(ctx, "instance-b")
	require.NoError(t, err)
	require.GreaterOrEqual(t, n, 1)
	_, err = conn.Exec(ctx, `SELECT 1`)
	require.Error(t, err, "the terminated session is gone")

	// The default pool (another application_name) is untouched.
	require.NoError(t, db.Pool.Ping(ctx))
}

func TestPrivateServerRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := pgtest.NewPrivateServer(t)
	require.True(t, srv.CanRestart())
	db := srv.NewDB(t)
	conn, err := db.Pool.Acquire(ctx)
	require.NoError(t, err)
	var pid1 int
	require.NoError(t, conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid1))

	require.NoError(t, srv.Restart(ctx))

	_, err = conn.Exec(ctx, `SELECT 1`)
	require.Error(t, err, "sessions do not survive a restart")
	conn.Release()
	// Data survives; new sessions work.
	v, err := migrations.Version(ctx, db.Pool, nil)
	require.NoError(t, err)
	require.Equal(t, migrations.LatestVersion(), v)
}
