package advisorylock_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// The Locker contract, run against both implementations.
func TestLockerContract(t *testing.T) {
	t.Parallel()
	impls := map[string]func(t *testing.T) (advisorylock.Locker, *pgtest.DB){
		"Manager": func(t *testing.T) (advisorylock.Locker, *pgtest.DB) {
			db := pgtest.NewDB(t)
			return newManager(t, db.Pool, nil), db
		},
		"Local": func(t *testing.T) (advisorylock.Locker, *pgtest.DB) {
			lc := newLocal(t)
			return lc, pgtest.NewDB(t) // the database only provides transactions for CheckTx
		},
	}
	for name, newLocker := range impls {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			t.Run("AcquireTryRelease", func(t *testing.T) {
				t.Parallel()
				lk, _ := newLocker(t)
				ctx := testCtx(t)
				l1, err := lk.Acquire(ctx, "k", time.Minute)
				require.NoError(t, err)
				_, err = lk.TryAcquire(ctx, "k", 0)
				var lae *advisorylock.LockAcquireError
				require.ErrorAs(t, err, &lae)
				require.Equal(t, advisorylock.ReasonLocked, lae.Reason)
				_, err = lk.TryAcquire(ctx, "k", 20*time.Millisecond)
				require.ErrorAs(t, err, &lae)
				require.Equal(t, advisorylock.ReasonTimedOut, lae.Reason)
				require.NoError(t, l1.Release(ctx))
				require.NoError(t, l1.Release(ctx))
				require.True(t, pgtest.Closed(l1.Done()))
				l2, err := lk.TryAcquire(ctx, "k", 0)
				require.NoError(t, err)
				require.Greater(t, l2.Token(), l1.Token())
				require.NoError(t, l2.Release(ctx))
			})
			t.Run("WaitForRelease", func(t *testing.T) {
				t.Parallel()
				lk, _ := newLocker(t)
				ctx := testCtx(t)
				var ev events
				l1, err := lk.Acquire(ctx, "k", time.Minute)
				require.NoError(t, err)
				got := make(chan *advisorylock.Lock)
				go func() {
					l, err := lk.TryAcquire(ctx, "k", 30*time.Second)
					if err != nil {
						t.Error(err)
					}
					ev.add("2 acquired")
					got <- l
				}()
				ev.add("1 releasing")
				require.NoError(t, l1.Release(ctx))
				l2 := <-got
				require.Equal(t, []string{"1 releasing", "2 acquired"}, ev.get())
				require.NoError(t, l2.Release(ctx))
			})
			t.Run("TTLExpiryAndLateRelease", func(t *testing.T) {
				t.Parallel()
				lk, db := newLocker(t)
				ctx := testCtx(t)
				l1, err := lk.Acquire(ctx, "k", 100*time.Millisecond)
				require.NoError(t, err)
				l2, err := lk.Acquire(ctx, "k", time.Minute)
				require.NoError(t, err)
				require.True(t, pgtest.Closed(l1.Done()))
				require.NoError(t, l1.Release(ctx))
				require.ErrorIs(t, l1.Extend(ctx, time.Second), advisorylock.ErrNotHeld)
				err = pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
					require.ErrorIs(t, l1.CheckTx(ctx, tx), advisorylock.ErrNotHeld)
					return l2.CheckTx(ctx, tx)
				})
				require.NoError(t, err)
				require.False(t, pgtest.Closed(l2.Done()))
				require.NoError(t, l2.Release(ctx))
			})
			t.Run("RunExclusiveNotPreempted", func(t *testing.T) {
				t.Parallel()
				lk, _ := newLocker(t)
				ctx := testCtx(t)
				const ttl = 2 * time.Second // renewed every ttl/3: room for a loaded machine (500 ms flaked at load 40 on 2 cores)
				err := lk.RunExclusive(ctx, "k", ttl, func(fctx context.Context, l *advisorylock.Lock) error {
					// Nobody gets the key for 3 TTLs while fn runs: the lease is renewed.
					_, err := lk.TryAcquire(ctx, "k", 3*ttl)
					var lae *advisorylock.LockAcquireError
					if !errors.As(err, &lae) || lae.Reason != advisorylock.ReasonTimedOut {
						return errors.Join(errors.New("key taken while fn ran"), err)
					}
					return fctx.Err()
				})
				require.NoError(t, err)
				l, err := lk.TryAcquire(ctx, "k", 0)
				require.NoError(t, err, "released after fn")
				require.NoError(t, l.Release(ctx))
			})
			t.Run("ReservationExtendRunExclusive", func(t *testing.T) {
				t.Parallel()
				lk, _ := newLocker(t)
				ctx := testCtx(t)
				r, err := lk.TryAcquire(ctx, "k", 0)
				require.NoError(t, err)
				require.NoError(t, r.Extend(ctx, time.Minute))
				ran := false
				require.NoError(t, r.RunExclusive(ctx, time.Second, func(context.Context) error { ran = true; return nil }))
				require.True(t, ran)
				require.ErrorIs(t, r.RunExclusive(ctx, time.Second, func(context.Context) error { return nil }), advisorylock.ErrNotHeld)
				r, err = lk.TryAcquire(ctx, "k", 0)
				require.NoError(t, err)
				require.NoError(t, r.Release(ctx)) // abandons the reservation
				r, err = lk.TryAcquire(ctx, "k", 0)
				require.NoError(t, err)
				require.NoError(t, r.Release(ctx))
			})
			t.Run("RaceExactlyOne", func(t *testing.T) {
				t.Parallel()
				lk, _ := newLocker(t)
				ctx := testCtx(t)
				var (
					wg  sync.WaitGroup
					mu  sync.Mutex
					won []*advisorylock.Lock
				)
				start := make(chan struct{})
				for range 4 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						if l, err := lk.TryAcquire(ctx, "race-test", 0); err == nil {
							mu.Lock()
							won = append(won, l)
							mu.Unlock()
						}
					}()
				}
				close(start)
				wg.Wait()
				require.Len(t, won, 1)
				require.NoError(t, won[0].Release(ctx))
			})
			t.Run("BadInputAndClose", func(t *testing.T) {
				t.Parallel()
				lk, _ := newLocker(t)
				ctx := testCtx(t)
				_, err := lk.Acquire(ctx, "", time.Second)
				require.ErrorIs(t, err, advisorylock.ErrInvalidKey)
				_, err = lk.Acquire(ctx, "k", -1)
				require.ErrorIs(t, err, advisorylock.ErrInvalidTTL)
				_, err = lk.TryAcquire(ctx, "k", -1)
				require.ErrorIs(t, err, advisorylock.ErrInvalidTTL)
				l, err := lk.Acquire(ctx, "k", time.Minute)
				require.NoError(t, err)
				waitErr := acquireErrAsync(ctx, lk, "k", false)
				require.NoError(t, lk.Close(ctx))
				require.NoError(t, lk.Close(ctx))
				require.True(t, pgtest.Closed(l.Done()))
				require.ErrorIs(t, <-waitErr, advisorylock.ErrClosed)
				_, err = lk.Acquire(ctx, "k", time.Second)
				require.ErrorIs(t, err, advisorylock.ErrClosed)
				require.NoError(t, l.Release(ctx))
			})
		})
	}
}
