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

// line has holder take key "k" and then each waiter start to wait for it, in
// order, each in the FIFO (its first attempt failed) before the next comes.
// Grants are recorded under the waiters' instance ids.
func line(t *testing.T, ctx context.Context, holder *advisorylock.Manager, waiters ...*advisorylock.Manager) (*advisorylock.Lock, *grants) {
	t.Helper()
	l, err := holder.Acquire(ctx, "k", time.Hour)
	require.NoError(t, err)
	g := newGrants()
	for _, m := range waiters {
		g.wait(ctx, m, "k", m.InstanceID())
		waitContended(t, m, 1)
	}
	return l, g
}

// Instances are served in the order they started to wait, each woken alone
// by the release that designates it (no attempt loses: one failed attempt
// per wait, the one that joined the FIFO), and an instance with several
// waiters rejoins the tail: a's second waiter, queued behind its first,
// comes after b and c.
func TestInstancesServedInArrivalOrderRoundRobin(t *testing.T) {
	ctx, db := setup(t)
	a, b, c := quiet(t, db, "a"), quiet(t, db, "b"), quiet(t, db, "c")
	l, g := line(t, ctx, quiet(t, db, "holder"), a, b, c)
	g.wait(ctx, a, "k", "a2")
	require.Eventually(t, func() bool { return a.Stats().Waiting == 2 }, 30*time.Second, time.Millisecond)

	require.NoError(t, l.Release(ctx))
	require.Equal(t, []string{"a", "b", "c", "a2"}, g.order(t, 4))
	for m, want := range map[*advisorylock.Manager]int64{a: 2, b: 1, c: 1} {
		s := m.Stats()
		require.Equal(t, want, s.Designated, m.InstanceID())
		require.Equal(t, want, s.Waited, m.InstanceID())
		// No attempt lost a race: at most one failed attempt per wait (a2's
		// instance may have rejoined the FIFO through a1's release instead).
		require.LessOrEqual(t, s.Contended, want, m.InstanceID())
	}
}

// Faults while instances wait in the FIFO ("dead" first, then "next"):
//   - a waiting instance whose liveness session ends (killed, terminated)
//     is skipped: the release designates the next live instance, and the
//     terminated one, back under a new identity, waits again at the tail;
//   - the holder dies: the first in line takes the lease from the dead
//     identity at its poll (nobody released), the others keep their order.
func TestFIFOFaults(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		firstPolls bool // the first in line polls every ~100ms
		fault      func(t *testing.T, ctx context.Context, db *pgtest.DB, holder *advisorylock.Lock, first *advisorylock.Manager)
		order      []string
	}{
		"waiter terminated": {
			fault: func(t *testing.T, ctx context.Context, db *pgtest.DB, holder *advisorylock.Lock, first *advisorylock.Manager) {
				_, pid := first.Liveness()
				_, err := db.Pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, int32(pid))
				require.NoError(t, err)
				waitContended(t, first, 2) // back with a new identity, in the FIFO again
				require.NoError(t, holder.Release(ctx))
			},
			order: []string{"next", "first"},
		},
		"holder terminated": {
			firstPolls: true,
			fault: func(t *testing.T, ctx context.Context, db *pgtest.DB, holder *advisorylock.Lock, first *advisorylock.Manager) {
				n, err := db.TerminateBackends(ctx, "holder")
				require.NoError(t, err)
				require.Positive(t, n)
				<-holder.Done()
			},
			order: []string{"first", "next"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			db := pgtest.NewDB(t)
			ctx := testCtx(t)
			first := quiet(t, db, "first")
			if tc.firstPolls {
				first = instance(t, db, "first", nil)
			}
			next := quiet(t, db, "next")
			l, g := line(t, ctx, quiet(t, db, "holder"), first, next)
			tc.fault(t, ctx, db, l, first)
			require.Equal(t, tc.order, g.order(t, 2))
			require.EqualValues(t, 1, next.Stats().Designated)
			if tc.firstPolls {
				require.EqualValues(t, 1, first.Stats().ExpiredTakeovers)
			}
		})
	}
}

// ForceRelease (the dashboard's "force free") ends a grant from outside and
// hands the key to the instance waiting for it, which its notification
// wakes (its poll is an hour away); a wrong token changes nothing. (And
// TryAcquire with no wait does not join the FIFO.)
func TestForceReleaseHandsKeyToWaiter(t *testing.T) {
	ctx, db := setup(t)
	waiter := quiet(t, db, "waiter")
	l, g := line(t, ctx, quiet(t, db, "holder"), waiter)
	_, err := quiet(t, db, "trier").TryAcquire(ctx, "k", 0)
	var lae *advisorylock.LockAcquireError
	require.ErrorAs(t, err, &lae)
	var queued []int32
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT queue FROM pgcoord.locks WHERE key = 'k'`).Scan(&queued))
	require.Len(t, queued, 1, "only the waiter")

	force := func(cfg *advisorylock.Config, key string, token int64) (bool, error) {
		return advisorylock.ForceRelease(ctx, db.Pool, cfg, key, token)
	}
	freed, err := force(nil, "k", l.Token()+1000)
	require.NoError(t, err)
	require.False(t, freed, "another token: nothing ended")
	freed, err = force(nil, "k", l.Token())
	require.NoError(t, err)
	require.True(t, freed)
	require.Equal(t, []string{"waiter"}, g.order(t, 1))
	require.EqualValues(t, 1, waiter.Stats().Designated)
	require.ErrorIs(t, l.Extend(ctx, time.Minute), advisorylock.ErrNotHeld)

	// Nothing held: nothing to end. Bad input: typed errors.
	freed, err = force(nil, "k", 0)
	require.NoError(t, err)
	require.False(t, freed)
	_, err = force(nil, "", 0)
	require.ErrorIs(t, err, advisorylock.ErrInvalidKey)
	_, err = force(&advisorylock.Config{AppName: "bad\x00app"}, "k", 0)
	require.ErrorIs(t, err, advisorylock.ErrInvalidConfig)
}
