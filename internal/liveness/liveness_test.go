package liveness_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/faultproxy"
	"github.com/pgcoord/pgcoord/internal/liveness"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TryLock on a silently partitioned connection returns within PingTimeout
// and the session counts as lost: it holds the connection (and so the
// pings) while it waits, so a TryLock without a deadline of its own must
// not keep the session looking alive.
func TestTryLockOnSilentPartitionLosesSession(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	proxy, url := faultproxy.StartFor(t, db.URL)
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.ConnConfig.ConnectTimeout = time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	s, err := liveness.Start(ctx, pool, liveness.Config{Namespace: "test", ID: "a", Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	t.Cleanup(func() { proxy.Blackhole(false); proxy.Thaw() })
	ok, _, err := s.TryLock(ctx, "x")
	require.NoError(t, err)
	require.True(t, ok)

	_, live, changed := s.State()
	require.True(t, live)
	proxy.Blackhole(true)
	require.NotZero(t, proxy.Freeze())
	returned := make(chan error, 1)
	go func() {
		_, _, err := s.TryLock(ctx, "y") // no deadline of its own
		returned <- err
	}()
	select {
	case err := <-returned:
		require.Error(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("TryLock on a partitioned connection did not return")
	}
	select {
	case <-changed:
	case <-time.After(20 * time.Second):
		t.Fatal("the session still counts as live")
	}
	_, live, _ = s.State()
	require.False(t, live)
}
