package advisorylock_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// grants records the order in which waiters got a key; each waiter releases
// at once.
type grants struct {
	ev      events
	results chan error
}

func newGrants() *grants { return &grants{results: make(chan error, 16)} }

// wait starts a waiter named name on m for key; it records its grant and
// releases.
func (g *grants) wait(ctx context.Context, m *advisorylock.Manager, key, name string) {
	go func() {
		l, err := m.Acquire(ctx, key, time.Minute)
		if err == nil {
			g.ev.add(name)
			err = l.Release(ctx)
		}
		g.results <- err
	}()
}

// order waits for n waiters and returns the order of their grants.
func (g *grants) order(t *testing.T, n int) []string {
	t.Helper()
	for range n {
		require.NoError(t, <-g.results)
	}
	return g.ev.get()
}

// quiet is an instance that moves only when a release designates it or
// notifies it: its poll is an hour away.
func quiet(t *testing.T, db *pgtest.DB, name string) *advisorylock.Manager {
	t.Helper()
	return instance(t, db, name, &advisorylock.Config{PollInterval: time.Hour})
}

// Instances are served in the order they started to wait, each woken alone
// by the release that designates it (no attempt loses: one failed attempt
// per wait, the one that joined the FIFO), and an instance with several
// waiters rejoins the tail: a2, queued behind a1 in instance a, comes after
// b and c.
func TestInstancesServedInArrivalOrderRoundRobin(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := testCtx(t)
	holder := quiet(t, db, "holder")
	a, b, c := quiet(t, db, "inst-a"), quiet(t, db, "inst-b"), quiet(t, db, "inst-c")
	l, err := holder.Acquire(ctx, "k", time.Hour)
	require.NoError(t, err)

	g := newGrants()
	for _, w := range []struct {
		m    *advisorylock.Manager
		name string
	}{{a, "a1"}, {b, "b"}, {c, "c"}} {
		g.wait(ctx, w.m, "k", w.name)
		waitContended(t, w.m, 1) // in the FIFO
	}
	g.wait(ctx, a, "k", "a2")
	require.Eventually(t, func() bool { return a.Stats().Waiting == 2 }, 30*time.Second, time.Millisecond)

	require.NoError(t, l.Release(ctx))
	require.Equal(t, []string{"a1", "b", "c", "a2"}, g.order(t, 4))
	for m, want := range map[*advisorylock.Manager]int64{a: 2, b: 1, c: 1} {
		s := m.Stats()
		require.Equal(t, want, s.Designated, m.InstanceID())
		require.Equal(t, want, s.Waited, m.InstanceID())
		// No attempt lost a race: at most one failed attempt per wait (a2's
		// instance may have rejoined the FIFO through a1's release instead).
		require.LessOrEqual(t, s.Contended, want, m.InstanceID())
	}
}

// A waiting instance whose liveness session ends (killed, terminated) is
// skipped: the release designates the next live instance in line, and the
// terminated instance, reconnected under a new identity, waits again at the
// tail.
func TestDeadWaitingInstanceSkipped(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := testCtx(t)
	holder := quiet(t, db, "holder")
	dead, next := quiet(t, db, "inst-dead"), quiet(t, db, "inst-next")
	l, err := holder.Acquire(ctx, "k", time.Hour)
	require.NoError(t, err)

	g := newGrants()
	g.wait(ctx, dead, "k", "dead")
	waitContended(t, dead, 1)
	g.wait(ctx, next, "k", "next")
	waitContended(t, next, 1)
	_, pid := dead.Liveness()
	_, err = db.Pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, int32(pid))
	require.NoError(t, err)
	// Back with a new identity, its waiter joined the FIFO again (at the tail).
	waitContended(t, dead, 2)

	require.NoError(t, l.Release(ctx))
	require.Equal(t, []string{"next", "dead"}, g.order(t, 2))
	require.EqualValues(t, 1, next.Stats().Designated)
	require.EqualValues(t, 1, dead.Stats().Designated)
}

// The holder dies while instances wait: the first in line takes the lease
// from the dead identity (at its poll: nobody released), the others keep
// their order.
func TestHolderDiesWhileInstancesWait(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := testCtx(t)
	holder := quiet(t, db, "holder")
	first := instance(t, db, "inst-first", nil) // polls every ~100ms
	second := quiet(t, db, "inst-second")
	l, err := holder.Acquire(ctx, "k", time.Hour)
	require.NoError(t, err)

	g := newGrants()
	g.wait(ctx, first, "k", "first")
	waitContended(t, first, 1)
	g.wait(ctx, second, "k", "second")
	waitContended(t, second, 1)
	n, err := db.TerminateBackends(ctx, "holder")
	require.NoError(t, err)
	require.Positive(t, n)
	<-l.Done()

	require.Equal(t, []string{"first", "second"}, g.order(t, 2))
	require.EqualValues(t, 1, first.Stats().ExpiredTakeovers)
	require.EqualValues(t, 1, second.Stats().Designated)
}

// TryAcquire with no wait leaves the FIFO alone, and a key that another
// instance waits for is not free for it even when its lease is released
// plainly (here: released by a fenced transaction's holder).
func TestTryAcquireDoesNotJoinFIFO(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := testCtx(t)
	a, b := quiet(t, db, "inst-a"), quiet(t, db, "inst-b")
	l, err := a.Acquire(ctx, "k", time.Hour)
	require.NoError(t, err)
	_, err = b.TryAcquire(ctx, "k", 0)
	var lae *advisorylock.LockAcquireError
	require.ErrorAs(t, err, &lae)
	var queued int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT cardinality(queue) FROM pgcoord.locks WHERE key = 'k'`).Scan(&queued))
	require.Zero(t, queued)
	require.NoError(t, l.Release(ctx))
}

// ForceRelease (the dashboard's "force free") ends a grant from outside and
// hands the key to the instance waiting for it, which its notification
// wakes (its poll is an hour away); a wrong token changes nothing.
func TestForceReleaseHandsKeyToWaiter(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := testCtx(t)
	holder, waiter := quiet(t, db, "holder"), quiet(t, db, "waiter")
	l, err := holder.Acquire(ctx, "k", time.Hour)
	require.NoError(t, err)
	g := newGrants()
	g.wait(ctx, waiter, "k", "waiter")
	waitContended(t, waiter, 1)

	freed, err := advisorylock.ForceRelease(ctx, db.Pool, nil, "k", l.Token()+1000)
	require.NoError(t, err)
	require.False(t, freed, "another token: nothing ended")
	freed, err = advisorylock.ForceRelease(ctx, db.Pool, nil, "k", l.Token())
	require.NoError(t, err)
	require.True(t, freed)
	require.Equal(t, []string{"waiter"}, g.order(t, 1))
	require.EqualValues(t, 1, waiter.Stats().Designated)
	require.ErrorIs(t, l.Extend(ctx, time.Minute), advisorylock.ErrNotHeld)

	// Nothing held: nothing to end. Bad input: typed errors.
	freed, err = advisorylock.ForceRelease(ctx, db.Pool, nil, "k", 0)
	require.NoError(t, err)
	require.False(t, freed)
	_, err = advisorylock.ForceRelease(ctx, db.Pool, nil, "", 0)
	require.ErrorIs(t, err, advisorylock.ErrInvalidKey)
	_, err = advisorylock.ForceRelease(ctx, db.Pool, &advisorylock.Config{AppName: "bad\x00app"}, "k", 0)
	require.ErrorIs(t, err, advisorylock.ErrInvalidConfig)
}
