package queue_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/faultproxy"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/queue"
)

// A silent partition: every flow of the running instance goes quiet and no
// new connection gets through (faultproxy Freeze + Blackhole). Its liveness
// session is lost, and its Process is cancelled (cause ErrLivenessLost)
// while the database still sees it alive, so before any other instance may
// rerun the message. Once the server ends the partitioned backends (what
// tcp_user_timeout does on a real network; the proxy's kernel keeps
// acknowledging, so the test ends them), another instance reruns the
// message, not charged as a failure.
func TestSilentPartitionCancelsProcessBeforeRescue(t *testing.T) {
	db, ctx := open(t), ctxT(t)
	proxy, url := faultproxy.StartFor(t, db.URL)
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.ConnConfig.RuntimeParams["application_name"] = "partitioned"
	// A connect into the blackhole fails soon, so the instance recovers as
	// soon as the test heals the network.
	cfg.ConnConfig.ConnectTimeout = time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	var partitioned atomic.Bool
	rerun := make(chan queue.Message, 1)
	other := newQueue(t, db, db.NewPool(t, &pgtest.PoolOptions{AppName: "other"}), &queue.Config{InstanceID: "other"})
	require.NoError(t, other.Subscribe(ctx, "work", queue.Consumer{Idle: partitioned.Load, Process: func(_ context.Context, m queue.Message) error {
		rerun <- m
		return nil
	}}))
	start(t, other)
	// The partitioned instance is not the rescuer: it keeps asking for
	// the rescuer lock on its liveness connection.
	receive(t, other.Rescuing())

	started := make(chan int64, 1)
	cancelled := make(chan error, 1)
	part := newQueue(t, db, pool, &queue.Config{InstanceID: "partitioned"})
	// Registered after newQueue: heals the network before the instance stops.
	t.Cleanup(func() { proxy.Blackhole(false); proxy.Thaw() })
	require.NoError(t, part.Subscribe(ctx, "work", queue.Consumer{Process: func(ctx context.Context, m queue.Message) error {
		started <- m.ID
		<-ctx.Done()
		cancelled <- context.Cause(ctx)
		return ctx.Err()
	}}))
	start(t, part)

	id, err := part.Publish(ctx, "work", "x", nil)
	require.NoError(t, err)
	require.Equal(t, id, receive(t, started))

	proxy.Blackhole(true)
	require.NotZero(t, proxy.Freeze())
	partitioned.Store(true)
	require.ErrorIs(t, receive(t, cancelled), queue.ErrLivenessLost)
	select {
	case m := <-rerun:
		t.Fatalf("message %d rerun while its instance's backend still held its liveness lock", m.ID)
	default:
	}

	_, err = db.TerminateBackends(ctx, "partitioned")
	require.NoError(t, err)
	m := receive(t, rerun)
	require.Equal(t, id, m.ID)
	require.Equal(t, 0, m.Retried, "a lost attempt is no failure")
	waitState(t, db, id, "completed")
}

// receive returns the next value from ch, failing the test after waitFor.
func receive[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitFor):
		t.Fatalf("nothing received within %s", waitFor)
		panic("unreachable")
	}
}
