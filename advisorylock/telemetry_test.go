package advisorylock_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/internal/otelxtest"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// Each lock instrument moves when its event happens: grants (one to a
// waiter of this instance, one designated by another instance's release), a takeover, contention, acquisitions by outcome (with their spans), hold
// time, leases lost by expiry and by the liveness session's end, and the
// liveness reconnect.
func TestInstruments(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := testCtx(t)
	metrics, traces := otelxtest.NewMetrics(t), otelxtest.NewTraces(t)
	a := instance(t, db, "inst-a", &advisorylock.Config{MeterProvider: metrics.Provider, TracerProvider: traces.Provider})
	b := instance(t, db, "inst-b", nil)

	// Contention: b holds "held"; a's TryAcquire finds it locked, then times out.
	held, err := b.Acquire(ctx, "held", time.Hour)
	require.NoError(t, err)
	_, err = a.TryAcquire(ctx, "held", 0)
	require.Error(t, err)
	_, err = a.TryAcquire(ctx, "held", 20*time.Millisecond)
	require.Error(t, err)
	require.NoError(t, held.Release(ctx))

	// Two callers of a: the second waits for the first's release.
	first, err := a.Acquire(ctx, "k", time.Hour)
	require.NoError(t, err)
	second := make(chan *advisorylock.Lock, 1)
	go func() {
		l, _ := a.Acquire(ctx, "k", time.Hour)
		second <- l
	}()
	require.Eventually(t, func() bool { return a.Stats().Waiting == 1 }, 20*time.Second, 5*time.Millisecond)
	require.NoError(t, first.Release(ctx))
	l := <-second
	require.NotNil(t, l)
	require.NoError(t, l.Release(ctx))

	// Across instances: b's release designates a, first in the key's FIFO
	// (a's failed attempt, counted as contention, put it there).
	byB, err := b.Acquire(ctx, "d", time.Hour)
	require.NoError(t, err)
	contended := a.Stats().Contended
	designated := make(chan *advisorylock.Lock, 1)
	go func() {
		l, _ := a.Acquire(ctx, "d", time.Hour)
		designated <- l
	}()
	require.Eventually(t, func() bool { return a.Stats().Contended > contended }, 20*time.Second, 5*time.Millisecond)
	require.NoError(t, byB.Release(ctx))
	l = <-designated
	require.NotNil(t, l)
	require.NoError(t, l.Release(ctx))
	require.Equal(t, int64(1), a.Stats().Designated)

	// A takeover of b's expired lease, and a's own lease lost by expiry.
	expired, err := b.Acquire(ctx, "exp", 20*time.Millisecond)
	require.NoError(t, err)
	<-expired.Done()
	taken, err := a.Acquire(ctx, "exp", 20*time.Millisecond)
	require.NoError(t, err)
	<-taken.Done()

	// The liveness session ends: the held lease is lost, the session comes back.
	lost, err := a.Acquire(ctx, "lost", time.Hour)
	require.NoError(t, err)
	_, err = db.TerminateBackends(ctx, "inst-a")
	require.NoError(t, err)
	<-lost.Done()
	require.Eventually(t, func() bool { return metrics.Value(t, "pgcoord.lock.liveness.reconnects") == 1 }, 20*time.Second, 5*time.Millisecond)

	outcome := func(o string) attribute.KeyValue { return attribute.String("pgcoord.lock.outcome", o) }
	cause := func(c string) attribute.KeyValue { return attribute.String("pgcoord.lock.cause", c) }
	got := metrics.Collect(t)
	for _, c := range []struct {
		name string
		attr []attribute.KeyValue
		want int64
	}{
		{"pgcoord.lock.grants", nil, 5},
		{"pgcoord.lock.designated", nil, 1},
		{"pgcoord.lock.handoffs", nil, a.Stats().Handoffs},
		{"pgcoord.lock.takeovers", nil, 1},
		{"pgcoord.lock.acquire.duration", []attribute.KeyValue{outcome("granted")}, 5},
		{"pgcoord.lock.acquire.duration", []attribute.KeyValue{outcome("locked")}, 1},
		{"pgcoord.lock.acquire.duration", []attribute.KeyValue{outcome("timed_out")}, 1},
		{"pgcoord.lock.hold.duration", nil, 5},
		{"pgcoord.lock.lost", []attribute.KeyValue{cause("expired")}, 1},
		{"pgcoord.lock.lost", []attribute.KeyValue{cause("liveness")}, 1},
	} {
		require.Equal(t, c.want, otelxtest.Value(got[c.name], c.attr...), "%s %v", c.name, c.attr)
	}
	require.GreaterOrEqual(t, otelxtest.Value(got["pgcoord.lock.contended"]), int64(2))

	spans := traces.Spans("pgcoord.lock.acquire")
	require.Len(t, spans, 7)
	require.Equal(t, codes.Error, spans[0].Status.Code, "the locked TryAcquire")
	require.Equal(t, codes.Unset, spans[2].Status.Code)
}
