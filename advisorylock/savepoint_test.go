package advisorylock_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/txhooks"
)

// CheckTx inside a *txhooks.Tx savepoint, then ROLLBACK TO SAVEPOINT (which
// drops the row lock taken in it), the lease expires and another instance
// takes the key: the outer transaction's commit must fail, so that its
// writes never interleave with the next holder's.
func TestCheckTxInRolledBackSavepointFencesCommit(t *testing.T) {
	t.Parallel()
	ctx, db, b, l, tx := heldInTx(t)
	_, err := db.Pool.Exec(ctx, `CREATE TABLE fenced (v int)`)
	require.NoError(t, err)
	sp, err := tx.Savepoint(ctx)
	require.NoError(t, err)
	require.NoError(t, l.CheckTx(ctx, sp))
	require.NoError(t, sp.Rollback(ctx)) // ROLLBACK TO SAVEPOINT: the row lock is gone
	_, err = tx.Exec(ctx, `INSERT INTO fenced VALUES (1)`)
	require.NoError(t, err)
	require.NoError(t, l.Extend(ctx, time.Millisecond)) // the holder hangs: its lease runs out

	// Nothing blocks b once the lease has expired (database clock).
	l2, err := b.Acquire(ctx, "k", time.Minute)
	require.NoError(t, err)
	require.Greater(t, l2.Token(), l.Token())
	t.Cleanup(func() { _ = l2.Release(context.Background()) })

	err = tx.Commit(ctx)
	require.ErrorIs(t, err, advisorylock.ErrNotHeld)
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM fenced`).Scan(&n))
	require.Zero(t, n, "the unfenced write must not commit")
}

// CheckTx in a savepoint that is released keeps the fence (the row lock
// stays with the transaction), and the commit-time check passes while the
// grant is still this one: the takeover waits for the commit.
func TestCheckTxInReleasedSavepointKeepsFence(t *testing.T) {
	t.Parallel()
	ctx, db, b, l, tx := heldInTx(t)
	sp, err := tx.Savepoint(ctx)
	require.NoError(t, err)
	inner, err := sp.Savepoint(ctx)
	require.NoError(t, err)
	require.NoError(t, l.CheckTx(ctx, inner))
	require.NoError(t, inner.Commit(ctx))
	require.NoError(t, sp.Commit(ctx))
	require.NoError(t, l.Extend(ctx, time.Millisecond)) // the holder hangs: its lease runs out

	got := takeoverBlocked(t, ctx, db, b)
	require.Empty(t, got)
	require.NoError(t, tx.Commit(ctx), "no other grant happened: the commit is fenced")
	requireNextGrant(t, ctx, got, l)
}

// A savepoint of a plain pgx.Tx gives CheckTx no way to learn of the commit:
// it refuses with ErrSavepoint instead of fencing nothing.
func TestCheckTxRefusesPlainPgxSavepoint(t *testing.T) {
	ctx, db := setup(t)
	m := newManager(t, db.Pool, nil)
	l, err := m.Acquire(ctx, "k", time.Minute)
	require.NoError(t, err)
	err = pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		return pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error { return l.CheckTx(ctx, sp) })
	})
	require.ErrorIs(t, err, advisorylock.ErrSavepoint)
	// Wrapping the pgx savepoint in a *txhooks.Tx does not help: its commit is a RELEASE.
	err = pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		return pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error { return l.CheckTx(ctx, txhooks.Wrap(sp)) })
	})
	require.ErrorIs(t, err, advisorylock.ErrSavepoint)
	// The outermost level of a plain pgx.Tx is fenced as before.
	require.NoError(t, pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return l.CheckTx(ctx, tx) }))
	require.NoError(t, l.Release(ctx))
}

// Local.CheckTx in a *txhooks.Tx savepoint pins the key to the outermost
// transaction: rolling the savepoint back does not free it.
func TestLocalCheckTxInSavepointPinsOutermost(t *testing.T) {
	ctx, db := setup(t)
	lc := newLocal(t)
	l, err := lc.Acquire(ctx, "k", time.Minute)
	require.NoError(t, err)
	tx, err := txhooks.Begin(ctx, db.Pool)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	sp, err := tx.Savepoint(ctx)
	require.NoError(t, err)
	require.NoError(t, l.CheckTx(ctx, sp))
	require.NoError(t, sp.Rollback(ctx))
	require.NoError(t, l.Release(ctx))
	_, err = lc.TryAcquire(ctx, "k", 0)
	var lae *advisorylock.LockAcquireError
	require.ErrorAs(t, err, &lae, "pinned until the outermost transaction ends")
	require.NoError(t, tx.Commit(ctx))
	l2, err := lc.TryAcquire(ctx, "k", 0)
	require.NoError(t, err)
	require.NoError(t, l2.Release(ctx))
}
