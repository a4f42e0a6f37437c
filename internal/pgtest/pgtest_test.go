package pgtest_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
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

// TestDurablePrivateServerCrash: Crash is an immediate shutdown, so the next
// Start runs crash recovery: a durable commit survives, an UNLOGGED table is
// emptied (after a clean stop it would keep its rows).
func TestDurablePrivateServerCrash(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := pgtest.NewDurablePrivateServer(t)
	db := srv.NewDB(t)
	var fsync string
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT current_setting('fsync')`).Scan(&fsync))
	require.Equal(t, "on", fsync)
	_, err := db.Pool.Exec(ctx, `CREATE TABLE logged (v int); CREATE UNLOGGED TABLE unlogged (v int);
		INSERT INTO logged VALUES (1); INSERT INTO unlogged VALUES (1)`)
	require.NoError(t, err)
	require.ErrorContains(t, srv.Start(ctx), "running")

	require.NoError(t, srv.Crash(ctx))
	require.ErrorContains(t, srv.Crash(ctx), "not running")
	require.NoError(t, srv.Start(ctx))

	// A new session: the pool's sessions ended with the server.
	conn, err := pgx.Connect(ctx, db.URL)
	require.NoError(t, err)
	defer conn.Close(ctx) //nolint:errcheck
	var logged, unlogged int
	require.NoError(t, conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM logged), (SELECT count(*) FROM unlogged)`).Scan(&logged, &unlogged))
	require.Equal(t, 1, logged, "a durable commit survives the crash")
	require.Equal(t, 0, unlogged, "crash recovery empties UNLOGGED tables")
}
