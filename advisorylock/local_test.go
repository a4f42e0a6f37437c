package advisorylock_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/txhooks"
)

// Local.CheckTx with a *txhooks.Tx keeps the key from the next holder until
// the transaction ends, after expiry or Release alike; with a plain pgx.Tx
// it is a point-in-time check.
func TestLocalCheckTxPinsUntilTxEnds(t *testing.T) {
	ctx, db := setup(t)
	lc := newLocal(t)
	locked := func() bool {
		l, err := lc.TryAcquire(ctx, "k", 0)
		if err != nil {
			return true
		}
		require.NoError(t, l.Release(ctx))
		return false
	}

	begin := func() *txhooks.Tx {
		tx, err := txhooks.Begin(ctx, db.Pool)
		require.NoError(t, err)
		// A failed assertion must not leave the connection checked out:
		// closing the pool would wait for it forever.
		t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
		return tx
	}

	// Expiry while pinned, then commit.
	l, err := lc.TryAcquire(ctx, "k", 0)
	require.NoError(t, err)
	tx := begin()
	require.NoError(t, l.CheckTx(ctx, tx))
	require.NoError(t, l.Extend(ctx, time.Millisecond)) // expires at once
	<-l.Done()
	require.True(t, locked(), "expired, but the checked transaction is still open")
	require.ErrorIs(t, l.CheckTx(ctx, tx), advisorylock.ErrNotHeld)
	require.NoError(t, tx.Commit(ctx))
	require.False(t, locked())

	// Release while pinned, then rollback.
	l, err = lc.Acquire(ctx, "k", time.Minute)
	require.NoError(t, err)
	tx = begin()
	require.NoError(t, l.CheckTx(ctx, tx))
	require.NoError(t, l.Release(ctx))
	require.True(t, locked())
	require.NoError(t, tx.Rollback(ctx))
	require.False(t, locked())

	// A plain pgx.Tx: checked, nothing pinned.
	l, err = lc.Acquire(ctx, "k", time.Minute)
	require.NoError(t, err)
	require.NoError(t, pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		if err := l.CheckTx(ctx, tx); err != nil {
			return err
		}
		require.NoError(t, l.Release(ctx))
		require.False(t, locked())
		return nil
	}))

	// A transaction that already ended is refused, and pins nothing.
	l, err = lc.Acquire(ctx, "k", time.Minute)
	require.NoError(t, err)
	tx = begin()
	require.NoError(t, tx.Commit(ctx))
	require.Error(t, l.CheckTx(ctx, tx))
	require.NoError(t, l.Release(ctx))
	require.False(t, locked())
}

// Manager.CheckTx works the same with a *txhooks.Tx (it needs no hooks).
func TestManagerCheckTxWithTxhooks(t *testing.T) {
	ctx, db := setup(t)
	m := newManager(t, db.Pool, nil)
	err := m.RunExclusive(ctx, "k", time.Second, func(ctx context.Context, l *advisorylock.Lock) error {
		return txhooks.Run(ctx, db.Pool, func(ctx context.Context, tx *txhooks.Tx) error {
			return l.CheckTx(ctx, tx)
		})
	})
	require.NoError(t, err)
}

// Local.CheckTx pins the key to a *txhooks.Tx until it ends, and it ends
// also when its COMMIT is never sent (context cancelled first) or its
// outcome is unknown (connection lost): after Release the key is free.
func TestLocalCheckTxPinEndsWhenCommitFails(t *testing.T) {
	ctx, db := setup(t)
	lc := newLocal(t)
	victim := db.NewPool(t, &pgtest.PoolOptions{AppName: "local-victim"})

	for _, tc := range []string{"never sent", "outcome unknown"} {
		l, err := lc.Acquire(ctx, "k", time.Minute)
		require.NoError(t, err, tc)
		tx, err := txhooks.Begin(ctx, victim)
		require.NoError(t, err, tc)
		require.NoError(t, l.CheckTx(ctx, tx), tc)
		cctx, cancel := context.WithCancel(ctx)
		if tc == "never sent" {
			cancel()
		} else {
			n, err := db.TerminateBackends(ctx, "local-victim")
			require.NoError(t, err)
			require.Equal(t, 1, n)
		}
		require.Error(t, tx.Commit(cctx), tc)
		cancel()
		require.NoError(t, l.Release(ctx), tc)
		l2, err := lc.TryAcquire(ctx, "k", 0)
		require.NoError(t, err, "%s: the key must be free after Release", tc)
		require.NoError(t, l2.Release(ctx))
	}
}
