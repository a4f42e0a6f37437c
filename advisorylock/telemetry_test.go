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

// Each lock instrument moves when its event happens: grants (one handed
// over to a waiter of this instance, one designated by another instance's
// release), a takeover, contention, acquisitions by outcome (with their
// spans), hold time, leases lost by expiry, by a release from outside
// (not_held: Extend finds the grant gone) and by the liveness session's
// end, and the liveness reconnect.
func TestInstruments(t *testing.T) {
	ctx, db := setup(t)
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
	require.Equal(t, int64(1), a.Stats().Handoffs, "the first release handed the key to the second caller")

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

	// An operator frees a's grant (ForceRelease): a's next Extend finds it
	// gone at the server, and the lease is lost with cause not_held.
	forced, err := a.Acquire(ctx, "forced", time.Hour)
	require.NoError(t, err)
	ok, err := advisorylock.ForceRelease(ctx, db.Pool, nil, "forced", forced.Token())
	require.NoError(t, err)
	require.True(t, ok)
	require.ErrorIs(t, forced.Extend(ctx, time.Hour), advisorylock.ErrNotHeld)
	require.True(t, pgtest.Closed(forced.Done()))

	// The liveness session ends: the held lease is lost, the session comes back.
	lost, err := a.Acquire(ctx, "lost", time.Hour)
	require.NoError(t, err)
	_, err = db.TerminateBackends(ctx, "inst-a")
	require.NoError(t, err)
	<-lost.Done()
	require.Eventually(t, func() bool { return metrics.Value(t, "pgcoord.lock.liveness.reconnects") == 1 }, 20*time.Second, 5*time.Millisecond)

	outcome := func(o string) []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("pgcoord.lock.outcome", o)}
	}
	cause := func(c string) []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("pgcoord.lock.cause", c)}
	}
	got := metrics.Require(t,
		otelxtest.Want{Name: "pgcoord.lock.grants", Value: 6},
		otelxtest.Want{Name: "pgcoord.lock.designated", Value: 1},
		otelxtest.Want{Name: "pgcoord.lock.handoffs", Value: 1},
		otelxtest.Want{Name: "pgcoord.lock.takeovers", Value: 1},
		otelxtest.Want{Name: "pgcoord.lock.acquire.duration", Attrs: outcome("granted"), Value: 6},
		otelxtest.Want{Name: "pgcoord.lock.acquire.duration", Attrs: outcome("locked"), Value: 1},
		otelxtest.Want{Name: "pgcoord.lock.acquire.duration", Attrs: outcome("timed_out"), Value: 1},
		otelxtest.Want{Name: "pgcoord.lock.hold.duration", Value: 6},
		otelxtest.Want{Name: "pgcoord.lock.lost", Attrs: cause("expired"), Value: 1},
		otelxtest.Want{Name: "pgcoord.lock.lost", Attrs: cause("not_held"), Value: 1},
		otelxtest.Want{Name: "pgcoord.lock.lost", Attrs: cause("liveness"), Value: 1},
	)
	require.GreaterOrEqual(t, otelxtest.Value(got["pgcoord.lock.contended"]), int64(2))

	spans := traces.Spans("pgcoord.lock.acquire")
	require.Len(t, spans, 8)
	require.Equal(t, codes.Error, spans[0].Status.Code, "the locked TryAcquire")
	require.Equal(t, codes.Unset, spans[2].Status.Code)
}
