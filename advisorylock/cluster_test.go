package advisorylock_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/txhooks"
)

// 3 instances × 4 goroutines × 60 iterations increment one counter row under
// RunExclusive + CheckTx: the total is exact and no two critical sections overlap.
func TestCounterExactUnderRunExclusive(t *testing.T) {
	ctx, db := setup(t)
	_, err := db.Pool.Exec(ctx, `CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL, last_token bigint NOT NULL)`)
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `INSERT INTO counter VALUES (1, 0, 0)`)
	require.NoError(t, err)

	const instances, goroutines, iterations = 3, 4, 60
	var inside, overlaps atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for i := range instances {
		m := instance(t, db, fmt.Sprintf("inst-%d", i), nil)
		pool := db.NewPool(t, &pgtest.PoolOptions{AppName: fmt.Sprintf("work-%d", i), MaxConns: goroutines})
		for range goroutines {
			g.Go(func() error {
				for range iterations {
					err := m.RunExclusive(gctx, "counter", 5*time.Second, func(ctx context.Context, l *advisorylock.Lock) error {
						if inside.Add(1) != 1 {
							overlaps.Add(1)
						}
						defer inside.Add(-1)
						return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
							if err := l.CheckTx(ctx, tx); err != nil {
								return err
							}
							// Fenced write: the stored token only grows.
							tag, err := tx.Exec(ctx, `UPDATE counter SET n = n + 1, last_token = $1 WHERE id = 1 AND last_token < $1`, l.Token())
							if err != nil {
								return err
							}
							if tag.RowsAffected() != 1 {
								return fmt.Errorf("token %d not above the stored one", l.Token())
							}
							return nil
						})
					})
					if err != nil {
						return err
					}
				}
				return nil
			})
		}
	}
	require.NoError(t, g.Wait())
	var n int64
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT n FROM counter WHERE id = 1`).Scan(&n))
	require.EqualValues(t, instances*goroutines*iterations, n)
	require.Zero(t, overlaps.Load())
}

// A holder that stops renewing is taken over after its TTL by another
// instance, which gets a larger token; the old holder's Release is a no-op,
// its CheckTx fails, and a write fenced with its stale token is rejected.
func TestHungHolderTakenOverAfterTTLAndFenced(t *testing.T) {
	ctx, db := setup(t)
	_, err := db.Pool.Exec(ctx, `CREATE TABLE resource (id int PRIMARY KEY, v text, fence bigint NOT NULL)`)
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `INSERT INTO resource VALUES (1, '', 0)`)
	require.NoError(t, err)
	a := instance(t, db, "inst-a", nil)
	b := instance(t, db, "inst-b", nil)
	fencedWrite := func(l *advisorylock.Lock, v string) (int64, error) {
		tag, err := db.Pool.Exec(ctx, `UPDATE resource SET v = $1, fence = $2 WHERE id = 1 AND fence <= $2`, v, l.Token())
		return tag.RowsAffected(), err
	}

	old, err := a.Acquire(ctx, "job", 300*time.Millisecond) // then "hangs": never renews
	require.NoError(t, err)
	n, err := fencedWrite(old, "old-1")
	require.NoError(t, err)
	require.EqualValues(t, 1, n)

	newer, err := b.Acquire(ctx, "job", time.Minute)
	require.NoError(t, err)
	require.Greater(t, newer.Token(), old.Token())
	require.EqualValues(t, 1, b.Stats().ExpiredTakeovers)
	n, err = fencedWrite(newer, "new")
	require.NoError(t, err)
	require.EqualValues(t, 1, n)

	// The hung holder wakes up.
	n, err = fencedWrite(old, "old-2")
	require.NoError(t, err)
	require.Zero(t, n, "a write fenced with a stale token is rejected")
	err = pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return old.CheckTx(ctx, tx) })
	require.ErrorIs(t, err, advisorylock.ErrNotHeld)
	require.NoError(t, old.Release(ctx))
	err = pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return newer.CheckTx(ctx, tx) })
	require.NoError(t, err, "the stale release did not free the new holder's lock")
	var v string
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT v FROM resource`).Scan(&v))
	require.Equal(t, "new", v)
	require.NoError(t, newer.Release(ctx))
}

// CheckTx locks the lease row: a takeover waits until the checking
// transaction ends, while the holder's own renewals and release do not.
func TestCheckTxBlocksTakeoverUntilTxEnds(t *testing.T) {
	t.Parallel()
	ctx, db, b, l, tx := heldInTx(t)
	require.NoError(t, l.CheckTx(ctx, tx))
	require.NoError(t, l.Extend(ctx, 200*time.Millisecond), "renewal is not blocked by CheckTx")

	got := takeoverBlocked(t, ctx, db, b)
	require.Empty(t, got, "takeover while the checking transaction is open")
	// Writes in tx are still fenced by l: the lease row is still l's.
	var token int64
	require.NoError(t, tx.QueryRow(ctx, `SELECT token FROM pgcoord.locks WHERE key = 'k'`).Scan(&token))
	require.Equal(t, l.Token(), token)
	require.NoError(t, tx.Commit(ctx))
	requireNextGrant(t, ctx, got, l)
}

// heldInTx starts instances inst-a and inst-b on a fresh database; a holds
// "k" with a long lease (on a loaded machine Begin and CheckTx may take
// longer than a short one; tests set the short lease that expires with
// Extend), and tx is an open transaction, rolled back at cleanup (never
// leave the connection checked out).
func heldInTx(t *testing.T) (context.Context, *pgtest.DB, *advisorylock.Manager, *advisorylock.Lock, *txhooks.Tx) {
	t.Helper()
	ctx, db, a, b := twoInstances(t, nil)
	l, err := a.Acquire(ctx, "k", time.Minute)
	require.NoError(t, err)
	tx, err := txhooks.Begin(ctx, db.Pool)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	return ctx, db, b, l, tx
}

// takeoverBlocked starts b's Acquire of "k" (b's pool is named "inst-b") and
// waits until the lease of "k" has expired (database clock) and b's grant
// waits for a row lock. The channel yields b's lock once it is granted.
func takeoverBlocked(t *testing.T, ctx context.Context, db *pgtest.DB, b *advisorylock.Manager) <-chan *advisorylock.Lock {
	t.Helper()
	got := acquireAsync(t, ctx, b, "k", time.Minute)
	require.Eventually(t, func() bool {
		var waiting bool
		err := db.Pool.QueryRow(ctx, `
			SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			               WHERE datname = current_database() AND application_name = 'inst-b' AND wait_event_type = 'Lock')
			   AND (SELECT expires_at < now() FROM pgcoord.locks WHERE key = 'k')`).Scan(&waiting)
		return err == nil && waiting
	}, 30*time.Second, 5*time.Millisecond)
	return got
}

// requireNextGrant waits for the grant from got: a later grant than l, with
// a larger token. It releases it.
func requireNextGrant(t *testing.T, ctx context.Context, got <-chan *advisorylock.Lock, l *advisorylock.Lock) {
	t.Helper()
	l2 := <-got
	require.NotNil(t, l2)
	require.Greater(t, l2.Token(), l.Token())
	require.NoError(t, l2.Release(ctx))
}

// A release wakes a waiter of another instance through NOTIFY, not the poll.
func TestReleaseWakesRemoteWaiterByNotify(t *testing.T) {
	t.Parallel()
	ctx, _, a, b := twoInstances(t, &advisorylock.Config{PollInterval: time.Hour})

	l, err := a.Acquire(ctx, "k", time.Hour)
	require.NoError(t, err)
	got := acquireErrAsync(ctx, b, "k", true)
	waitContended(t, b, 1) // its failed attempt put b in the key's FIFO
	require.NoError(t, l.Release(ctx))
	require.NoError(t, <-got) // with an hour-long poll, only the NOTIFY can have woken b
}

// pg_terminate_backend of every connection of the holder's instance: its
// locks' Done channels close, a RunExclusive fn sees its context cancelled
// with ErrLockLost, another instance takes the lock at once (no TTL wait),
// and the instance reconnects with a new identity and can lock again.
func TestTerminatedHolderLosesLocks(t *testing.T) {
	t.Parallel()
	ctx, db, a, b := twoInstances(t, nil)

	plain, err := a.Acquire(ctx, "plain", time.Hour)
	require.NoError(t, err)
	reservation, err := a.TryAcquire(ctx, "reservation", 0)
	require.NoError(t, err)
	fnStarted := make(chan struct{})
	runErr := make(chan error, 1)
	var cause error
	go func() {
		runErr <- a.RunExclusive(ctx, "run", time.Hour, func(ctx context.Context, l *advisorylock.Lock) error {
			close(fnStarted)
			<-ctx.Done()
			cause = context.Cause(ctx)
			return nil
		})
	}()
	<-fnStarted

	n, err := db.TerminateBackends(ctx, "inst-a")
	require.NoError(t, err)
	require.Positive(t, n)
	for _, l := range []*advisorylock.Lock{plain, reservation} {
		select {
		case <-l.Done():
		case <-ctx.Done():
			t.Fatalf("Done of %q not closed", l.Key())
		}
	}
	require.ErrorIs(t, <-runErr, advisorylock.ErrLockLost)
	require.ErrorIs(t, cause, advisorylock.ErrLockLost)

	// Another instance takes every key at once, although the leases had an
	// hour left. "At once" allows the terminated backend a moment to exit:
	// the holder sees its connection end (FATAL) before the server has
	// released the session's advisory locks (seen on PostgreSQL 16 in CI).
	for _, key := range []string{"plain", "reservation", "run"} {
		l, err := b.TryAcquire(ctx, key, 10*time.Second)
		require.NoError(t, err, key)
		require.NoError(t, l.Release(ctx))
	}
	// "plain" and "reservation" are taken from the dead identity; "run" may
	// already have been freed by RunExclusive's own (token-checked) release.
	require.GreaterOrEqual(t, b.Stats().ExpiredTakeovers, int64(2))
	require.GreaterOrEqual(t, a.Stats().Lost, int64(3))

	// Acquire waits for the new liveness session instead of failing.
	l, err := a.Acquire(ctx, "after-acquire", time.Minute)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx))
	// The instance reconnects and works again.
	require.Eventually(t, func() bool {
		l, err := a.TryAcquire(ctx, "after", 0)
		if err != nil {
			return false
		}
		return l.Release(ctx) == nil
	}, 30*time.Second, 20*time.Millisecond)
}

// One instance holds 1,000 locks with its pool capped at 5 connections.
func TestThousandLocksFewConnections(t *testing.T) {
	ctx, db := setup(t)
	pool := db.NewPool(t, &pgtest.PoolOptions{AppName: "inst-big", MaxConns: 5})
	m := newManager(t, pool, &advisorylock.Config{InstanceID: "inst-big"})
	other := instance(t, db, "inst-other", nil)

	const n = 1000
	locks := make([]*advisorylock.Lock, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(10)
	for i := range n {
		g.Go(func() error {
			l, err := m.TryAcquire(gctx, fmt.Sprintf("key-%d", i), 0)
			locks[i] = l
			return err
		})
	}
	require.NoError(t, g.Wait())
	require.EqualValues(t, n, m.Stats().Held)
	var conns, rows int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'inst-big'`).Scan(&conns))
	require.LessOrEqual(t, conns, 6, "5 pooled connections + 1 liveness session")
	require.LessOrEqual(t, pool.Stat().TotalConns(), int32(5))
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pgcoord.locks WHERE owner = 'inst-big' AND expires_at IS NULL`).Scan(&rows))
	require.Equal(t, n, rows)
	_, err := other.TryAcquire(ctx, "key-500", 0)
	var lae *advisorylock.LockAcquireError
	require.ErrorAs(t, err, &lae)

	// Close releases them all, in one statement.
	require.NoError(t, m.Close(ctx))
	for _, l := range locks {
		require.True(t, pgtest.Closed(l.Done()))
	}
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pgcoord.locks WHERE expires_at = '-infinity'`).Scan(&rows))
	require.Equal(t, n, rows)
	l, err := other.TryAcquire(ctx, "key-500", 0)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx))
}

// Close releases held locks (a waiter elsewhere gets them), makes waiting
// calls return ErrClosed, and every later call ErrClosed.
func TestCloseReleasesAndStopsWaiters(t *testing.T) {
	t.Parallel()
	ctx, _, a, b := twoInstances(t, &advisorylock.Config{PollInterval: time.Hour})

	held, err := a.Acquire(ctx, "held-by-a", time.Hour)
	require.NoError(t, err)
	bWaits := acquireErrAsync(ctx, b, "held-by-a", true)
	blocker, err := b.Acquire(ctx, "held-by-b", time.Hour)
	require.NoError(t, err)
	aWaits := acquireErrAsync(ctx, a, "held-by-b", false)
	waitContended(t, a, 1)
	waitContended(t, b, 1)

	require.NoError(t, a.Close(ctx))
	require.True(t, pgtest.Closed(held.Done()))
	require.ErrorIs(t, <-aWaits, advisorylock.ErrClosed)
	require.NoError(t, <-bWaits, "b was woken by a's release at Close")
	_, err = a.Acquire(ctx, "x", time.Second)
	require.ErrorIs(t, err, advisorylock.ErrClosed)
	_, err = a.TryAcquire(ctx, "x", 0)
	require.ErrorIs(t, err, advisorylock.ErrClosed)
	err = a.RunExclusive(ctx, "x", time.Second, func(context.Context, *advisorylock.Lock) error { return nil })
	require.ErrorIs(t, err, advisorylock.ErrClosed)
	require.NoError(t, held.Release(ctx), "release after close is a no-op")
	require.NoError(t, blocker.Release(ctx))
}

// RunExclusive renews the lease while fn runs: a waiter elsewhere never gets
// the key during fn although fn outlives the TTL many times.
func TestRunExclusiveRenewsLease(t *testing.T) {
	t.Parallel()
	ctx, db, a, b := twoInstances(t, nil)
	const ttl = 2 * time.Second // renewed every ttl/3: 500 ms flaked at load 40 on 2 cores
	err := a.RunExclusive(ctx, "long", ttl, func(ctx context.Context, l *advisorylock.Lock) error {
		start := dbNow(t, db)
		dbTimePasses(t, db, start, 3*ttl)
		_, err := b.TryAcquire(ctx, "long", 0)
		var lae *advisorylock.LockAcquireError
		if !errors.As(err, &lae) {
			return fmt.Errorf("lock taken during fn: %v", err)
		}
		return pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return l.CheckTx(ctx, tx) })
	})
	require.NoError(t, err)
	require.Zero(t, a.Stats().Lost)
}

// Tokens strictly increase across grants of a key, whoever gets them.
func TestTokensStrictlyIncrease(t *testing.T) {
	ctx, db := setup(t)
	ms := []*advisorylock.Manager{instance(t, db, "inst-a", nil), instance(t, db, "inst-b", nil)}
	var (
		mu     sync.Mutex
		tokens []int64
	)
	g, gctx := errgroup.WithContext(ctx)
	for _, m := range ms {
		for range 3 {
			g.Go(func() error {
				for range 20 {
					err := m.RunExclusive(gctx, "tok", time.Second, func(ctx context.Context, l *advisorylock.Lock) error {
						mu.Lock()
						tokens = append(tokens, l.Token())
						mu.Unlock()
						return nil
					})
					if err != nil {
						return err
					}
				}
				return nil
			})
		}
	}
	require.NoError(t, g.Wait())
	require.Len(t, tokens, 120)
	for i := 1; i < len(tokens); i++ {
		require.Greater(t, tokens[i], tokens[i-1], "grant %d", i)
	}
}

// The idle liveness session is pinged every HealthCheckInterval without
// disturbing the locks it backs.
func TestHealthCheckKeepsLocks(t *testing.T) {
	ctx, db := setup(t)
	m := instance(t, db, "inst-a", &advisorylock.Config{HealthCheckInterval: 10 * time.Millisecond})
	l, err := m.TryAcquire(ctx, "k", 0)
	require.NoError(t, err)
	dbTimePasses(t, db, dbNow(t, db), 300*time.Millisecond) // many health checks
	require.False(t, pgtest.Closed(l.Done()))
	require.Zero(t, m.Stats().Lost)
	require.NoError(t, l.Extend(ctx, time.Minute))
	require.NoError(t, l.Release(ctx))
}

// Close while a RunExclusive function runs cancels its context and releases.
func TestCloseCancelsRunningFunction(t *testing.T) {
	ctx, db := setup(t)
	pool := db.NewPool(t, &pgtest.PoolOptions{AppName: "inst-a"})
	m, err := advisorylock.New(pool, &advisorylock.Config{InstanceID: "inst-a"})
	require.NoError(t, err)
	require.NoError(t, m.Start(ctx))
	started := make(chan *advisorylock.Lock)
	res := make(chan error, 1)
	var cause error
	go func() {
		res <- m.RunExclusive(ctx, "k", time.Minute, func(ctx context.Context, l *advisorylock.Lock) error {
			started <- l
			<-ctx.Done()
			cause = context.Cause(ctx)
			return nil
		})
	}()
	l := <-started
	require.NoError(t, m.Close(ctx))
	require.ErrorIs(t, <-res, advisorylock.ErrLockLost)
	require.ErrorIs(t, cause, advisorylock.ErrLockLost)
	err = l.Extend(ctx, time.Second)
	require.ErrorIs(t, err, advisorylock.ErrNotHeld)
	require.ErrorIs(t, err, advisorylock.ErrClosed)
	var free bool
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT expires_at = '-infinity' FROM pgcoord.locks WHERE key = 'k'`).Scan(&free))
	require.True(t, free)
}

// A PostgreSQL restart ends every session: the holder's locks are lost
// (Done closes), and after the restart both instances lock again; the token
// sequence keeps growing.
func TestServerRestart(t *testing.T) {
	t.Parallel()
	srv := pgtest.NewPrivateServer(t)
	db := srv.NewDB(t)
	ctx := testCtx(t)
	a := instance(t, db, "inst-a", nil)
	b := instance(t, db, "inst-b", nil)
	l, err := a.Acquire(ctx, "k", time.Hour)
	require.NoError(t, err)

	require.NoError(t, srv.Restart(ctx))
	select {
	case <-l.Done():
	case <-ctx.Done():
		t.Fatal("Done not closed after a server restart")
	}
	var l2 *advisorylock.Lock
	require.Eventually(t, func() bool {
		l2, err = b.TryAcquire(ctx, "k", 0)
		return err == nil
	}, 30*time.Second, 20*time.Millisecond)
	require.Greater(t, l2.Token(), l.Token())
	require.NoError(t, l2.Release(ctx))
	require.Eventually(t, func() bool {
		l3, err := a.TryAcquire(ctx, "k", 0)
		return err == nil && l3.Release(ctx) == nil
	}, 30*time.Second, 20*time.Millisecond)
}

// Waiters of one instance get the key in FIFO order, each straight from
// the previous holder's Release (a handoff).
func TestLocalWaitersFIFOWithHandoff(t *testing.T) {
	ctx, db := setup(t)
	m := instance(t, db, "inst-a", &advisorylock.Config{PollInterval: time.Hour})
	l0, err := m.Acquire(ctx, "k", time.Minute)
	require.NoError(t, err)
	var ev events
	results := make(chan error, 3)
	for i := 1; i <= 3; i++ {
		go func() {
			l, err := m.Acquire(ctx, "k", time.Minute)
			if err == nil {
				ev.add(fmt.Sprint(i))
				err = l.Release(ctx)
			}
			results <- err
		}()
		require.Eventually(t, func() bool { return m.Stats().Waiting == int64(i) }, 30*time.Second, time.Millisecond)
		if i == 1 {
			waitContended(t, m, 1) // the head has made its attempt: it is idle, ready for a handoff
		}
	}
	require.NoError(t, l0.Release(ctx))
	for range 3 {
		require.NoError(t, <-results)
	}
	require.Equal(t, []string{"1", "2", "3"}, ev.get())
	s := m.Stats()
	require.EqualValues(t, 3, s.Handoffs)
	require.EqualValues(t, 0, s.Waiting)
	require.EqualValues(t, 0, s.Held)
}

// Handoffs inside one busy instance never starve another instance: as soon
// as it waits, releases free the key instead of handing it on.
func TestHandoffsDoNotStarveOtherInstances(t *testing.T) {
	t.Parallel()
	ctx, _, a, b := twoInstances(t, nil)
	stop := make(chan struct{})
	g, gctx := errgroup.WithContext(ctx)
	var iterations atomic.Int64
	for range 4 {
		g.Go(func() error {
			for iterations.Add(1) < 5000 {
				select {
				case <-stop:
					return nil
				default:
				}
				l, err := a.Acquire(gctx, "busy", time.Minute)
				if err != nil {
					return err
				}
				if err := l.Release(gctx); err != nil {
					return err
				}
			}
			return errors.New("instance b starved")
		})
	}
	require.Eventually(t, func() bool { return a.Stats().Handoffs > 10 }, 30*time.Second, time.Millisecond)
	l, err := b.Acquire(ctx, "busy", time.Minute)
	require.NoError(t, err)
	close(stop)
	require.NoError(t, l.Release(ctx))
	require.NoError(t, g.Wait())
}

// Release while the holder's own CheckTx transaction is still open neither
// blocks nor lets the next holder in before that transaction ends.
func TestReleaseInsideOwnCheckedTx(t *testing.T) {
	ctx, db := setup(t)
	m := instance(t, db, "inst-a", nil)
	l, err := m.Acquire(ctx, "k", time.Minute)
	require.NoError(t, err)
	got := acquireAsync(t, ctx, m, "k", time.Minute)
	waitContended(t, m, 1) // a local waiter is queued: Release would hand over
	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) }) // never leave the connection checked out
	require.NoError(t, l.CheckTx(ctx, tx))
	require.NoError(t, l.Release(ctx), "does not wait for the open transaction")
	require.Eventually(t, func() bool { // the waiter's grant waits for tx's row lock
		var waiting bool
		err := db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = 'inst-a' AND wait_event_type = 'Lock')`).Scan(&waiting)
		return err == nil && waiting
	}, 30*time.Second, 5*time.Millisecond)
	require.Empty(t, got)
	require.NoError(t, tx.Commit(ctx))
	l2 := <-got
	require.Greater(t, l2.Token(), l.Token())
	require.NoError(t, l2.Release(ctx))
}

// A releasing instance with another local waiter keeps its turn also when
// its release falls back to the plain one (a transaction holds the lease
// row: here the holder's own CheckTx): it rejoins the key's FIFO in that
// release, behind the instances already waiting, not only when its next
// waiter's own attempt gets the row (which waits for that transaction, and
// under contention for every statement queued on the row before it).
func TestPlainReleaseKeepsReleasersTurn(t *testing.T) {
	t.Parallel()
	ctx, db, a, b := twoInstances(t, &advisorylock.Config{PollInterval: time.Hour})
	c := instance(t, db, "inst-c", &advisorylock.Config{PollInterval: time.Hour})
	acquire := func(m *advisorylock.Manager) <-chan *advisorylock.Lock {
		return acquireAsync(t, ctx, m, "k", time.Minute)
	}
	queue := func() []string {
		var q []string
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT queue_name FROM pgcoord.locks WHERE key = 'k'`).Scan(&q))
		return q
	}

	held, err := b.Acquire(ctx, "k", time.Minute)
	require.NoError(t, err)
	a1 := acquire(a) // a's head: its attempt puts a in the FIFO
	waitContended(t, a, 1)
	a2 := acquire(a) // a's second waiter waits behind a1, locally
	require.Eventually(t, func() bool { return a.Stats().Waiting == 2 }, 30*time.Second, 5*time.Millisecond)
	require.NoError(t, held.Release(ctx)) // designates a: a1 holds, a left the FIFO
	l1 := <-a1
	require.NotNil(t, l1)
	c1 := acquire(c)
	waitContended(t, c, 1)
	require.Equal(t, []string{"inst-c"}, queue())

	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	require.NoError(t, l1.CheckTx(ctx, tx))
	require.NoError(t, l1.Release(ctx)) // the row is held by tx: the plain release
	require.Equal(t, []string{"inst-c", "inst-a"}, queue(), "a rejoins behind c in its release")
	require.NoError(t, tx.Commit(ctx))

	lc := <-c1
	require.NotNil(t, lc)
	require.NoError(t, lc.Release(ctx))
	l2 := <-a2
	require.NotNil(t, l2)
	require.Greater(t, l2.Token(), lc.Token())
	require.NoError(t, l2.Release(ctx))
}
