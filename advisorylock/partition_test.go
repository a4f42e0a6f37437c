package advisorylock_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/internal/faultproxy"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// partitionedInstance starts a Manager whose connections go through a
// fault proxy, with a 1 s health check.
func partitionedInstance(t *testing.T, db *pgtest.DB, logs *pgtest.Buffer) (*advisorylock.Manager, *faultproxy.Proxy) {
	t.Helper()
	proxy, url := faultproxy.StartFor(t, db.URL)
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.ConnConfig.RuntimeParams["application_name"] = "inst-a"
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	m := newManager(t, pool, &advisorylock.Config{
		InstanceID:          "inst-a",
		HealthCheckInterval: time.Second,
		Logger:              slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	// Cleanups run last-in first-out: thaw before the Manager and its pool close.
	t.Cleanup(proxy.Thaw)
	return m, proxy
}

// A silent partition of the liveness connection (its TCP flow frozen: no
// RST, both sockets open): the holder notices at its next ping, declares its
// reservation lost, reconnects under a new identity and ends the old server
// session, so another instance takes the key — before, the old backend kept
// the old identity's advisory lock until TCP keepalive ended it (hours).
func TestSilentPartitionLostLockTakenOverAfterReconnect(t *testing.T) {
	ctx, db := setup(t)
	var logs pgtest.Buffer
	a, proxy := partitionedInstance(t, db, &logs)
	b := instance(t, db, "inst-b", nil)

	reservation, err := a.TryAcquire(ctx, "k", 0) // no TTL: only the session's end frees it
	require.NoError(t, err)
	got := acquireAsync(t, ctx, b, "k", time.Minute)
	waitContended(t, b, 1)

	frozen := time.Now()
	require.Positive(t, proxy.Freeze())
	select {
	case <-reservation.Done():
	case <-ctx.Done():
		t.Fatal("the holder never declared its lock lost")
	}
	lost := time.Now()
	var l2 *advisorylock.Lock
	select {
	case l2 = <-got:
	case <-ctx.Done():
		t.Fatal("another instance could not take a lock its holder declared lost")
	}
	taken := time.Now()
	require.NotNil(t, l2)
	require.Greater(t, l2.Token(), reservation.Token())
	// The key was freed by the holder's new session ending the old backend
	// (the NOTIFY sent then may wake b before the holder logs it).
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "ended the previous liveness session") },
		30*time.Second, 10*time.Millisecond, "taken over because the old backend was ended: %s", logs.String())
	t.Logf("silent partition (HealthCheckInterval 1s): freeze→declared lost %v, declared lost→taken by another instance %v, freeze→taken %v",
		lost.Sub(frozen).Round(time.Millisecond), taken.Sub(lost).Round(time.Millisecond), taken.Sub(frozen).Round(time.Millisecond))
	require.NoError(t, l2.Release(ctx))

	// The holder works again under its new identity (its pooled connections
	// were frozen too: thaw them).
	proxy.Thaw()
	l3, err := a.Acquire(ctx, "k", time.Minute)
	require.NoError(t, err)
	require.NoError(t, l3.Release(ctx))
}

// When the holder cannot reach the server at all (new connections hang
// too), the server ends the silent liveness session by itself
// (idle_session_timeout, set on the liveness session), and another instance
// takes the key.
func TestSilentPartitionServerEndsOrphanedSession(t *testing.T) {
	ctx, db := setup(t)
	var version int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version))
	if version < 140000 {
		t.Skip("idle_session_timeout needs PostgreSQL 14")
	}
	var logs pgtest.Buffer
	a, proxy := partitionedInstance(t, db, &logs)
	b := instance(t, db, "inst-b", nil)

	reservation, err := a.TryAcquire(ctx, "k", 0)
	require.NoError(t, err)
	proxy.Blackhole(true) // reconnects hang
	t.Cleanup(func() { proxy.Blackhole(false) })
	frozen := time.Now()
	require.Positive(t, proxy.Freeze())
	l2, err := b.Acquire(ctx, "k", time.Minute)
	require.NoError(t, err)
	taken := time.Now()
	require.Greater(t, l2.Token(), reservation.Token())
	require.False(t, strings.Contains(logs.String(), "ended the previous liveness session"), "the holder never reached the server")
	t.Logf("silent partition, holder unreachable (HealthCheckInterval 1s): freeze→taken by another instance %v", taken.Sub(frozen).Round(time.Millisecond))
	require.NoError(t, l2.Release(ctx))
	select {
	case <-reservation.Done():
	case <-ctx.Done():
		t.Fatal("the holder never declared its lock lost")
	}
}

// A role that may not call pg_terminate_backend (EXECUTE revoked): after a
// silent partition the holder reconnects, cannot end its old session and
// says so (WARN); the server's timeout on the liveness session frees the
// key instead.
func TestSilentPartitionTerminateNotPermitted(t *testing.T) {
	ctx, db := setup(t)
	var superuser bool
	var version int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT rolsuper, current_setting('server_version_num')::int FROM pg_roles WHERE rolname = current_user`).Scan(&superuser, &version))
	if !superuser || version < 140000 {
		t.Skip("needs a superuser to revoke EXECUTE on pg_terminate_backend, and PostgreSQL 14 (idle_session_timeout)")
	}
	role := "locks_" + strings.TrimPrefix(db.Name, "pgcoord_")
	const password = "locks-pw-4e1a"
	_, err := db.Pool.Exec(ctx, `CREATE ROLE `+role+` LOGIN PASSWORD '`+password+`'`)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := db.Pool.Exec(ctx, `DROP OWNED BY `+role)
		if err == nil {
			_, err = db.Pool.Exec(ctx, `DROP ROLE `+role)
		}
		if err != nil {
			t.Logf("drop role %s: %v", role, err)
		}
	})
	_, err = db.Pool.Exec(ctx, `
		GRANT USAGE ON SCHEMA pgcoord TO `+role+`;
		GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pgcoord TO `+role+`;
		GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA pgcoord TO `+role+`;
		REVOKE EXECUTE ON FUNCTION pg_terminate_backend(integer, bigint) FROM PUBLIC;`)
	require.NoError(t, err)

	proxy, url := faultproxy.StartFor(t, db.URL)
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.ConnConfig.User, cfg.ConnConfig.Password = role, password
	cfg.ConnConfig.RuntimeParams["application_name"] = "inst-a"
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	var logs pgtest.Buffer
	a := newManager(t, pool, &advisorylock.Config{
		InstanceID:          "inst-a",
		HealthCheckInterval: time.Second,
		Logger:              slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	t.Cleanup(proxy.Thaw)
	b := instance(t, db, "inst-b", nil)

	reservation, err := a.TryAcquire(ctx, "k", 0)
	require.NoError(t, err)
	require.Positive(t, proxy.Freeze())
	l2, err := b.Acquire(ctx, "k", time.Minute)
	require.NoError(t, err)
	require.Greater(t, l2.Token(), reservation.Token())
	require.NoError(t, l2.Release(ctx))
	require.Eventually(t, func() bool {
		return strings.Contains(logs.String(), "not permitted to end the previous liveness session")
	},
		30*time.Second, 10*time.Millisecond, "logs: %s", logs.String())
	require.NotContains(t, logs.String(), "ended the previous liveness session")
}
