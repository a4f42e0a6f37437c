package faultproxy_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/faultproxy"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func connect(t *testing.T, connString string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func backendPID(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var pid int
	require.NoError(t, conn.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&pid))
	return pid
}

// proxied marks t parallel and gives it a proxy in front of a database of
// its own, the proxy's URL, and one connection through it that has answered
// a statement (so its flow is open).
func proxied(t *testing.T) (*faultproxy.Proxy, string, *pgx.Conn) {
	t.Helper()
	t.Parallel()
	p, url := faultproxy.StartFor(t, pgtest.NewDB(t).URL)
	conn := connect(t, url)
	backendPID(t, conn)
	return p, url, conn
}

func TestCutEndsOpenFlowsOnly(t *testing.T) {
	p, url, conn := proxied(t)
	require.Equal(t, 1, p.Flows())
	accepted := p.Accepted()

	require.Equal(t, 1, p.Cut())
	_, err := conn.Exec(context.Background(), `SELECT 1`)
	require.Error(t, err, "a cut flow must fail the next statement")

	backendPID(t, connect(t, url)) // new connections still pass
	require.Greater(t, p.Accepted(), accepted)
}

func TestFreezeHoldsBytesUntilThaw(t *testing.T) {
	p, url, frozen := proxied(t)
	require.Equal(t, 1, p.Freeze())

	// A frozen flow can never answer: a statement with a deadline fails.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := frozen.Exec(ctx, `SELECT 1`)
	cancel()
	require.Error(t, err)

	// A flow opened after Freeze is not frozen.
	other := connect(t, url)
	backendPID(t, other)

	// Bytes sent while frozen arrive after Thaw. Freeze counts every flow
	// still registered: other's, the first (its client gave up, but a frozen
	// flow moves nothing, so it stays until Thaw), and any connection attempt
	// the proxy has not finished tearing down (pgx may dial more than once).
	require.GreaterOrEqual(t, p.Freeze(), 2)
	done := make(chan error, 1)
	go func() {
		_, err := other.Exec(context.Background(), `SELECT 1`)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("statement finished through a frozen flow: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	p.Thaw()
	require.NoError(t, <-done)
}

func TestSetTargetRedirectsNewFlows(t *testing.T) {
	t.Parallel()
	first := pgtest.NewDB(t)
	second := pgtest.NewPrivateServer(t)
	p, url := faultproxy.StartFor(t, first.URL)

	sysID := func(conn *pgx.Conn) (id int64) {
		require.NoError(t, conn.QueryRow(context.Background(),
			`SELECT system_identifier FROM pg_control_system()`).Scan(&id))
		return id
	}
	before := connect(t, url)
	firstID := sysID(before)

	target, err := faultproxy.HostPort(second.AdminURL())
	require.NoError(t, err)
	p.SetTarget(target)
	after := connect(t, p.URL(second.AdminURL()))
	require.NotEqual(t, firstID, sysID(after), "a new flow reaches the new target")
	require.Equal(t, firstID, sysID(before), "an open flow stays on its server")
}

func TestBlackholeHangsNewConnections(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	p, url := faultproxy.StartFor(t, db.URL)
	p.Blackhole(true)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := pgx.Connect(ctx, url)
	cancel()
	require.Error(t, err)

	p.Blackhole(false)
	backendPID(t, connect(t, url))
}
