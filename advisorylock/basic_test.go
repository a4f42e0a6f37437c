package advisorylock_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// events records the order in which things happen across goroutines.
type events struct {
	mu  sync.Mutex
	seq []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	e.seq = append(e.seq, s)
	e.mu.Unlock()
}

func (e *events) get() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.seq...)
}

// waitContended waits until m has seen at least n attempts find a key held,
// i.e. until a waiter is really waiting.
func waitContended(t *testing.T, m *advisorylock.Manager, n int64) {
	t.Helper()
	require.Eventually(t, func() bool { return m.Stats().Contended >= n }, 30*time.Second, 5*time.Millisecond)
}

// dbTimePasses waits until the database clock is past t0 + d (t0 read from the database).
func dbTimePasses(t *testing.T, db *pgtest.DB, t0 time.Time, d time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool {
		var past bool
		err := db.Pool.QueryRow(context.Background(), `SELECT now() > $1::timestamptz + $2::bigint * interval '1 microsecond'`, t0, d.Microseconds()).Scan(&past)
		return err == nil && past
	}, 30*time.Second, 10*time.Millisecond)
}

func dbNow(t *testing.T, db *pgtest.DB) time.Time {
	t.Helper()
	var now time.Time
	require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT now()`).Scan(&now))
	return now
}

func TestAcquireReleaseSmoke(t *testing.T) {
	ctx, db := setup(t)
	m := newManager(t, db.Pool, nil)

	l1, err := m.Acquire(ctx, "k", time.Minute)
	require.NoError(t, err)
	require.Equal(t, "k", l1.Key())
	require.Positive(t, l1.Token())

	_, err = m.TryAcquire(ctx, "k", 0)
	var lae *advisorylock.LockAcquireError
	require.True(t, errors.As(err, &lae), "%v", err)
	require.Equal(t, advisorylock.ReasonLocked, lae.Reason)
	require.Equal(t, "k", lae.Key)

	require.NoError(t, l1.Release(ctx))
	require.True(t, pgtest.Closed(l1.Done()))
	require.NoError(t, l1.Release(ctx))

	l2, err := m.TryAcquire(ctx, "k", 0)
	require.NoError(t, err)
	require.Greater(t, l2.Token(), l1.Token())
	require.NoError(t, l2.Release(ctx))

	s := m.Stats()
	require.EqualValues(t, 2, s.Acquired)
	require.EqualValues(t, 2, s.Released)
	require.EqualValues(t, 0, s.Held)
	require.EqualValues(t, 0, s.Lost)
}

// nocobase §6.3 "Acquire/release ordering": the second acquire is obtained
// only after the first is released.
func TestAcquireWaitsForRelease(t *testing.T) {
	ctx, db := setup(t)
	m := newManager(t, db.Pool, nil)
	var ev events

	l1, err := m.Acquire(ctx, "test", time.Minute)
	require.NoError(t, err)
	ev.add("1 acquired")
	got := make(chan *advisorylock.Lock)
	go func() {
		l2, err := m.Acquire(ctx, "test", time.Minute)
		if err != nil {
			t.Error(err)
		}
		ev.add("2 acquired")
		got <- l2
	}()
	waitContended(t, m, 1)
	ev.add("1 releasing")
	require.NoError(t, l1.Release(ctx))
	l2 := <-got
	require.Equal(t, []string{"1 acquired", "1 releasing", "2 acquired"}, ev.get())
	require.Greater(t, l2.Token(), l1.Token())
	require.NoError(t, l2.Release(ctx))
	require.EqualValues(t, 1, m.Stats().Waited)
}

// nocobase §6.3 "Acquire TTL": the waiter gets the lock when the first
// lease's TTL passes; the late release of the first does not disturb it.
func TestAcquireTTLExpiresAndLateReleaseIsNoop(t *testing.T) {
	t.Parallel()
	ctx, db, a, b := twoInstances(t, nil)

	l1, err := a.Acquire(ctx, "test", 300*time.Millisecond)
	require.NoError(t, err)
	l2, err := b.Acquire(ctx, "test", time.Minute) // waits for l1's TTL
	require.NoError(t, err)
	require.Greater(t, l2.Token(), l1.Token())
	// l1's holder sees its lease ended.
	select {
	case <-l1.Done():
	case <-ctx.Done():
		t.Fatal("l1.Done not closed after its TTL")
	}
	require.NoError(t, l1.Release(ctx), "late release is a no-op")
	require.ErrorIs(t, l1.Extend(ctx, time.Minute), advisorylock.ErrNotHeld)
	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) }) // never leave the connection checked out
	require.ErrorIs(t, l1.CheckTx(ctx, tx), advisorylock.ErrNotHeld)
	require.NoError(t, l2.CheckTx(ctx, tx), "the later holder still holds it")
	require.NoError(t, tx.Rollback(ctx))
	_, err = a.TryAcquire(ctx, "test", 0)
	require.Error(t, err, "l1's late release did not free l2's lock")
	require.EqualValues(t, 1, b.Stats().ExpiredTakeovers)
	require.EqualValues(t, 1, a.Stats().Lost)
	require.NoError(t, l2.Release(ctx))
}

// nocobase §6.3 "runExclusive" and "runExclusive with ttl=200": B runs only
// after A completes, and A is not pre-empted although it runs longer than
// its TTL.
func TestRunExclusiveSerialisesAndTTLDoesNotPreempt(t *testing.T) {
	t.Parallel()
	ctx, db, a, b := twoInstances(t, nil)
	var ev events
	const ttl = 2 * time.Second // NocoBase uses 200 ms; renewals get room on a loaded machine (500 ms flaked at load 40 on 2 cores)

	aRunning := make(chan time.Time)
	aFinish := make(chan struct{})
	aDone := make(chan error)
	go func() {
		aDone <- a.RunExclusive(ctx, "test", ttl, func(ctx context.Context, l *advisorylock.Lock) error {
			ev.add("A start")
			var now time.Time
			if err := db.Pool.QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
				return err
			}
			aRunning <- now
			<-aFinish
			if ctx.Err() != nil {
				return ctx.Err() // pre-empted: must not happen
			}
			ev.add("A end")
			return nil
		})
	}()
	var start time.Time
	select {
	case start = <-aRunning:
	case err := <-aDone:
		t.Fatalf("A's RunExclusive ended before its function ran: %v", err)
	}
	bDone := make(chan error)
	go func() {
		bDone <- b.RunExclusive(ctx, "test", ttl, func(ctx context.Context, l *advisorylock.Lock) error {
			ev.add("B start")
			return nil
		})
	}()
	waitContended(t, b, 1)
	dbTimePasses(t, db, start, 3*ttl) // A has outlived its TTL several times
	close(aFinish)
	require.NoError(t, <-aDone)
	require.NoError(t, <-bDone)
	require.Equal(t, []string{"A start", "A end", "B start"}, ev.get())
	require.EqualValues(t, 0, a.Stats().Lost)
	require.EqualValues(t, 0, b.Stats().ExpiredTakeovers)
}

// RunExclusive returns fn's error and releases; a panic releases too.
func TestRunExclusiveErrorAndPanicRelease(t *testing.T) {
	ctx, db := setup(t)
	m := newManager(t, db.Pool, nil)
	boom := errors.New("boom")
	var held *advisorylock.Lock
	err := m.RunExclusive(ctx, "k", time.Second, func(ctx context.Context, l *advisorylock.Lock) error {
		held = l
		return boom
	})
	require.ErrorIs(t, err, boom)
	require.True(t, pgtest.Closed(held.Done()))

	require.Panics(t, func() {
		_ = m.RunExclusive(ctx, "k", time.Second, func(ctx context.Context, l *advisorylock.Lock) error {
			held = l
			panic("fn panicked")
		})
	})
	require.True(t, pgtest.Closed(held.Done()))
	l, err := m.TryAcquire(ctx, "k", 0)
	require.NoError(t, err, "released after the panic")
	require.NoError(t, l.Release(ctx))
}

// nocobase §6.3 tryAcquire "Basic" and the handle form.
func TestTryAcquireBasicAndHandle(t *testing.T) {
	ctx, db := setup(t)
	m := newManager(t, db.Pool, nil)

	l1, err := m.Acquire(ctx, "test", time.Minute)
	require.NoError(t, err)
	_, err = m.TryAcquire(ctx, "test", 0)
	var lae *advisorylock.LockAcquireError
	require.ErrorAs(t, err, &lae)
	require.NoError(t, l1.Release(ctx))

	r, err := m.TryAcquire(ctx, "test", 0)
	require.NoError(t, err)
	// A reservation has no expiry.
	var expires *time.Time
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT expires_at FROM pgcoord.locks WHERE key = 'test'`).Scan(&expires))
	require.Nil(t, expires)

	// The handle's RunExclusive converts the reservation into a lease, runs, releases.
	var ev events
	waiterGot := make(chan *advisorylock.Lock)
	require.NoError(t, r.RunExclusive(ctx, time.Second, func(context.Context) error {
		ev.add("handle run")
		go func() {
			l, err := m.Acquire(ctx, "test", time.Minute)
			if err != nil {
				t.Error(err)
			}
			ev.add("waiter acquired")
			waiterGot <- l
		}()
		waitContended(t, m, 2)
		ev.add("handle end")
		return nil
	}))
	l3 := <-waiterGot
	require.Equal(t, []string{"handle run", "handle end", "waiter acquired"}, ev.get())
	// The handle is one grant: once released it does not re-acquire.
	err = r.RunExclusive(ctx, time.Second, func(ctx context.Context) error { return nil })
	require.ErrorIs(t, err, advisorylock.ErrNotHeld)
	require.ErrorIs(t, r.Extend(ctx, time.Second), advisorylock.ErrNotHeld)
	require.NoError(t, l3.Release(ctx))
}

// nocobase §6.3 tryAcquire "TOCTOU race" and the cluster tests of
// plugin-backups / plugin-workflow: instances racing for a key, exactly one
// wins each round; a later run on another instance succeeds.
func TestTryAcquireRaceExactlyOneWins(t *testing.T) {
	ctx, db := setup(t)
	ms := []*advisorylock.Manager{instance(t, db, "node-1", nil), instance(t, db, "node-2", nil), instance(t, db, "node-3", nil)}
	for round := range 10 {
		key := "race-test"
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			won     []*advisorylock.Lock
			skipped int
		)
		start := make(chan struct{})
		for _, m := range ms {
			for range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					l, err := m.TryAcquire(ctx, key, 0)
					mu.Lock()
					defer mu.Unlock()
					var lae *advisorylock.LockAcquireError
					switch {
					case err == nil:
						won = append(won, l)
					case errors.As(err, &lae):
						skipped++
					default:
						t.Error(err)
					}
				}()
			}
		}
		close(start)
		wg.Wait()
		require.Len(t, won, 1, "round %d", round)
		require.Equal(t, 5, skipped)
		require.NoError(t, won[0].Extend(ctx, time.Second))
		require.NoError(t, won[0].Release(ctx))
	}
}

// nocobase §6.3 tryAcquire with a wait: succeeds when released in time,
// times out otherwise.
func TestTryAcquireWait(t *testing.T) {
	t.Parallel()
	ctx, _, a, b := twoInstances(t, nil)

	l1, err := a.Acquire(ctx, "test", time.Minute)
	require.NoError(t, err)
	_, err = b.TryAcquire(ctx, "test", 50*time.Millisecond)
	var lae *advisorylock.LockAcquireError
	require.ErrorAs(t, err, &lae)
	require.Equal(t, advisorylock.ReasonTimedOut, lae.Reason)
	require.Contains(t, err.Error(), "timed out")

	got := make(chan error)
	go func() {
		l, err := b.TryAcquire(ctx, "test", 30*time.Second)
		if err == nil {
			err = l.Release(ctx)
		}
		got <- err
	}()
	waitContended(t, b, 2)
	require.NoError(t, l1.Release(ctx))
	require.NoError(t, <-got)
}

// nocobase §6.3 "Sequential", "Extend" and "release() abandons the reservation".
func TestTryAcquireSequentialExtendAbandon(t *testing.T) {
	ctx, db := setup(t)
	m := newManager(t, db.Pool, nil)

	// Sequential.
	r, err := m.TryAcquire(ctx, "seq", 0)
	require.NoError(t, err)
	require.NoError(t, r.Extend(ctx, time.Second))
	require.NoError(t, r.Release(ctx))
	r, err = m.TryAcquire(ctx, "seq", 0)
	require.NoError(t, err)
	require.NoError(t, r.Release(ctx))

	// Extend keeps the lock past the original TTL (database clock).
	start := dbNow(t, db)
	l, err := m.Acquire(ctx, "ext", time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Extend(ctx, time.Minute))
	dbTimePasses(t, db, start, 2*time.Second)
	_, err = m.TryAcquire(ctx, "ext", 0)
	var lae *advisorylock.LockAcquireError
	require.ErrorAs(t, err, &lae)
	require.False(t, pgtest.Closed(l.Done()))
	require.NoError(t, l.Release(ctx))
	r, err = m.TryAcquire(ctx, "ext", 0)
	require.NoError(t, err)
	require.NoError(t, r.Release(ctx))

	// Release abandons a reservation; the key can be taken at once.
	r, err = m.TryAcquire(ctx, "abandon", 0)
	require.NoError(t, err)
	require.NoError(t, r.Release(ctx))
	r, err = m.TryAcquire(ctx, "abandon", 0)
	require.NoError(t, err)
	require.NoError(t, r.Extend(ctx, time.Second))
	require.NoError(t, r.Release(ctx))

	// Extend of an expired lease fails ("lock is not active").
	l, err = m.Acquire(ctx, "expired", 50*time.Millisecond)
	require.NoError(t, err)
	<-l.Done()
	require.ErrorIs(t, l.Extend(ctx, time.Second), advisorylock.ErrNotHeld)
}

func TestTwoAppsDoNotContend(t *testing.T) {
	ctx, db := setup(t)
	a := instance(t, db, "inst-a", &advisorylock.Config{AppName: "app-a"})
	b := instance(t, db, "inst-b", &advisorylock.Config{AppName: "app-b"})
	la, err := a.TryAcquire(ctx, "same", 0)
	require.NoError(t, err)
	lb, err := b.TryAcquire(ctx, "same", 0)
	require.NoError(t, err)
	require.NotEqual(t, la.Token(), lb.Token())
	require.Equal(t, "app-a", a.AppName())
	require.NoError(t, la.Release(ctx))
	require.NoError(t, lb.Release(ctx))
}

func TestBadInput(t *testing.T) {
	ctx, db := setup(t)

	_, err := advisorylock.New(db.Pool, &advisorylock.Config{Schema: "Bad-Schema"})
	require.Error(t, err)
	require.Contains(t, err.Error(), "Config.Schema")
	_, err = advisorylock.New(nil, nil)
	require.Error(t, err)
	_, err = advisorylock.New(db.Pool, &advisorylock.Config{Retention: time.Second})
	require.ErrorContains(t, err, "Config.Retention")

	notStarted, err := advisorylock.New(db.Pool, nil)
	require.NoError(t, err)
	_, err = notStarted.Acquire(ctx, "k", 0)
	require.ErrorIs(t, err, advisorylock.ErrNotStarted)
	require.NoError(t, notStarted.Close(ctx), "Close before Start")
	require.NoError(t, notStarted.Close(ctx), "Close twice")
	require.ErrorIs(t, notStarted.Start(ctx), advisorylock.ErrClosed)

	m := newManager(t, db.Pool, nil)
	for _, key := range []string{"", strings.Repeat("k", advisorylock.MaxKeyBytes+1), "a\x00b", "\xff\xfe"} {
		_, err = m.Acquire(ctx, key, time.Second)
		require.ErrorIs(t, err, advisorylock.ErrInvalidKey, "%q", key)
		_, err = m.TryAcquire(ctx, key, 0)
		require.ErrorIs(t, err, advisorylock.ErrInvalidKey)
		err = m.RunExclusive(ctx, key, time.Second, func(context.Context, *advisorylock.Lock) error { return nil })
		require.ErrorIs(t, err, advisorylock.ErrInvalidKey)
	}
	_, err = m.Acquire(ctx, "k", -time.Second)
	require.ErrorIs(t, err, advisorylock.ErrInvalidTTL)
	_, err = m.TryAcquire(ctx, "k", -time.Second)
	require.ErrorIs(t, err, advisorylock.ErrInvalidTTL)
	err = m.RunExclusive(ctx, "k", -time.Second, func(context.Context, *advisorylock.Lock) error { return nil })
	require.ErrorIs(t, err, advisorylock.ErrInvalidTTL)

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = m.Acquire(cancelled, "k", time.Second)
	require.ErrorIs(t, err, context.Canceled)

	l, err := m.Acquire(ctx, "k", time.Second)
	require.NoError(t, err)
	require.ErrorIs(t, l.Extend(ctx, 0), advisorylock.ErrInvalidTTL)
	require.ErrorIs(t, l.RunExclusive(ctx, -1, func(context.Context) error { return nil }), advisorylock.ErrInvalidTTL)
	require.Error(t, l.CheckTx(ctx, nil))
	require.NoError(t, l.Release(ctx))

	var rows int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pgcoord.locks WHERE key <> 'k'`).Scan(&rows))
	require.Zero(t, rows, "bad input wrote nothing")

	// A cancelled wait returns ctx's error.
	l, err = m.Acquire(ctx, "held", time.Minute)
	require.NoError(t, err)
	short, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	_, err = m.Acquire(short, "held", time.Second)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NoError(t, l.Release(ctx))
}

// A lease shorter than a round trip is granted and ends at once; nothing
// stays registered.
func TestTinyTTL(t *testing.T) {
	ctx, db := setup(t)
	m := newManager(t, db.Pool, nil)
	for range 5 {
		l, err := m.Acquire(ctx, "tiny", time.Microsecond)
		require.NoError(t, err)
		<-l.Done()
		require.NoError(t, l.Release(ctx))
	}
	require.Eventually(t, func() bool { return m.Stats().Held == 0 }, 10*time.Second, 5*time.Millisecond)
	l, err := m.TryAcquire(ctx, "tiny", 0)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx))
}
