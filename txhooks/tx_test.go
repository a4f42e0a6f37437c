package txhooks_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/txhooks"
)

// recorder collects hook calls in order, safe for concurrent use.
type recorder struct {
	mu    sync.Mutex
	calls []string
}

func (r *recorder) hook(name string) txhooks.Hook {
	return func(ctx context.Context) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.calls = append(r.calls, name)
		return nil
	}
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

func newTable(t *testing.T) *pgxpool.Pool {
	t.Helper()
	db := pgtest.NewDB(t)
	_, err := db.Pool.Exec(context.Background(), `CREATE TABLE t (v int)`)
	require.NoError(t, err)
	return db.Pool
}

// withTable marks t parallel and gives it a context and newTable's pool.
func withTable(t *testing.T) (context.Context, *pgxpool.Pool) {
	t.Helper()
	t.Parallel()
	return context.Background(), newTable(t)
}

func count(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM t`).Scan(&n))
	return n
}

// begin starts a transaction on pool that inserts rows into t, and returns
// it with a recorder.
func begin(t *testing.T, ctx context.Context, pool *pgxpool.Pool, rows ...int) (*txhooks.Tx, *recorder) {
	t.Helper()
	tx, err := txhooks.Begin(ctx, pool)
	require.NoError(t, err)
	for _, v := range rows {
		_, err = tx.Exec(ctx, `INSERT INTO t VALUES ($1)`, v)
		require.NoError(t, err)
	}
	return tx, &recorder{}
}

// hookOutcomes registers the hooks "commit", "rollback" and "unknown" on tx.
func (r *recorder) hookOutcomes(tx *txhooks.Tx) {
	tx.AfterCommit(r.hook("commit"))
	tx.AfterRollback(r.hook("rollback"))
	tx.AfterOutcomeUnknown(r.hook("unknown"))
}

func TestCommitRunsCommitHooksInOrderAfterCommit(t *testing.T) {
	ctx, pool := withTable(t)
	tx, rec := begin(t, ctx, pool, 1)
	var seenByOthers int
	tx.AfterCommit(func(ctx context.Context) error {
		// Another session already sees the row: the hook runs after COMMIT.
		return pool.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&seenByOthers)
	})
	tx.AfterCommit(rec.hook("c1"))
	tx.AfterRollback(rec.hook("r1"))
	tx.AfterCommit(rec.hook("c2"))
	require.Empty(t, rec.got(), "nothing runs before commit")
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, []string{"c1", "c2"}, rec.got())
	require.Equal(t, 1, seenByOthers)

	// Rollback after commit is the usual deferred no-op and runs nothing.
	require.ErrorIs(t, tx.Rollback(ctx), pgx.ErrTxClosed)
	require.Equal(t, []string{"c1", "c2"}, rec.got())
}

func TestRollbackRunsRollbackHooks(t *testing.T) {
	ctx, pool := withTable(t)
	tx, rec := begin(t, ctx, pool, 1)
	tx.AfterCommit(rec.hook("c1"))
	tx.AfterRollback(rec.hook("r1"))
	tx.AfterRollback(rec.hook("r2"))
	require.NoError(t, tx.Rollback(ctx))
	require.Equal(t, []string{"r1", "r2"}, rec.got())
	require.Zero(t, count(t, pool))
	require.ErrorIs(t, tx.Commit(ctx), pgx.ErrTxClosed)
	require.Equal(t, []string{"r1", "r2"}, rec.got())
}

func TestCommitTurnedIntoRollback(t *testing.T) {
	ctx, pool := withTable(t)
	tx, rec := begin(t, ctx, pool)
	tx.AfterCommit(rec.hook("c1"))
	tx.AfterRollback(rec.hook("r1"))
	_, err := tx.Exec(ctx, `SELECT 1/0`)
	require.Error(t, err)
	err = tx.Commit(ctx)
	require.ErrorIs(t, err, pgx.ErrTxCommitRollback)
	require.Equal(t, []string{"r1"}, rec.got())
}

func TestFailingAndPanickingHooksAreLoggedAndLaterHooksRun(t *testing.T) {
	ctx, pool := withTable(t)
	var logs pgtest.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	tx, rec := begin(t, ctx, pool, 1)
	tx.SetLogger(logger)
	tx.AfterCommit(func(context.Context) error { return errors.New("boom-error") })
	tx.AfterCommit(func(context.Context) error { panic("boom-panic") })
	tx.AfterCommit(rec.hook("after"))
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, []string{"after"}, rec.got())
	require.Equal(t, 1, count(t, pool), "a failing hook never undoes the commit")
	out := logs.String()
	require.Contains(t, out, "boom-error")
	require.Contains(t, out, "boom-panic")
}

func TestHooksGetUncancelledContext(t *testing.T) {
	t.Parallel()
	pool := newTable(t)
	type key struct{}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
	tx, err := txhooks.Begin(ctx, pool)
	require.NoError(t, err)
	var hookErr error
	var value any
	tx.AfterCommit(func(hctx context.Context) error {
		hookErr = hctx.Err()
		value = hctx.Value(key{})
		// The hook can still use the database.
		var one int
		return pool.QueryRow(hctx, `SELECT 1`).Scan(&one)
	})
	require.NoError(t, tx.Commit(ctx))
	cancel()
	require.NoError(t, hookErr)
	require.Equal(t, "v", value)

	// A caller whose context is cancelled before rollback still runs rollback hooks.
	ctx2, cancel2 := context.WithCancel(context.Background())
	tx2, err := txhooks.Begin(ctx2, pool)
	require.NoError(t, err)
	ran := make(chan error, 1)
	tx2.AfterRollback(func(hctx context.Context) error { ran <- hctx.Err(); return nil })
	cancel2()
	_ = tx2.Rollback(ctx2)
	require.NoError(t, <-ran)
}

func TestSavepointHooksMoveToParentOnRelease(t *testing.T) {
	ctx, pool := withTable(t)
	tx, rec := begin(t, ctx, pool)
	tx.AfterCommit(rec.hook("outer-1"))
	sp, err := tx.Savepoint(ctx)
	require.NoError(t, err)
	sp.AfterCommit(rec.hook("sp"))
	sp.AfterRollback(rec.hook("sp-rollback"))
	require.NoError(t, sp.Commit(ctx)) // RELEASE SAVEPOINT
	require.Empty(t, rec.got(), "release runs nothing: the outer tx has not committed")
	tx.AfterCommit(rec.hook("outer-2"))
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, []string{"outer-1", "sp", "outer-2"}, rec.got())
}

func TestReleasedSavepointRollbackHooksRunWhenParentRollsBack(t *testing.T) {
	ctx, pool := withTable(t)
	tx, rec := begin(t, ctx, pool)
	nested, err := tx.Begin(ctx) // the pgx.Tx interface form
	require.NoError(t, err)
	sp := nested.(*txhooks.Tx)
	sp.AfterCommit(rec.hook("sp-commit"))
	sp.AfterRollback(rec.hook("sp-rollback"))
	require.NoError(t, sp.Commit(ctx))
	require.NoError(t, tx.Rollback(ctx))
	require.Equal(t, []string{"sp-rollback"}, rec.got())
}

func TestSavepointRollbackDropsItsCommitHooks(t *testing.T) {
	ctx, pool := withTable(t)
	tx, rec := begin(t, ctx, pool, 1)
	sp, err := tx.Savepoint(ctx)
	require.NoError(t, err)
	_, err = sp.Exec(ctx, `INSERT INTO t VALUES (2)`)
	require.NoError(t, err)
	sp.AfterCommit(rec.hook("sp-commit"))
	sp.AfterRollback(rec.hook("sp-rollback"))
	// A doubly nested savepoint released into sp is dropped with it.
	sp2, err := sp.Savepoint(ctx)
	require.NoError(t, err)
	sp2.AfterCommit(rec.hook("sp2-commit"))
	require.NoError(t, sp2.Commit(ctx))
	require.NoError(t, sp.Rollback(ctx))
	require.Equal(t, []string{"sp-rollback"}, rec.got(), "rollback hooks of a savepoint run when it rolls back")
	tx.AfterCommit(rec.hook("outer"))
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, []string{"sp-rollback", "outer"}, rec.got())
	require.Equal(t, 1, count(t, pool))
}

func TestRun(t *testing.T) {
	ctx, pool := withTable(t)
	rec := &recorder{}

	err := txhooks.Run(ctx, pool, func(ctx context.Context, tx *txhooks.Tx) error {
		tx.AfterCommit(rec.hook("ok"))
		_, err := tx.Exec(ctx, `INSERT INTO t VALUES (1)`)
		return err
	})
	require.NoError(t, err)
	require.Equal(t, []string{"ok"}, rec.got())

	sentinel := errors.New("fn failed")
	err = txhooks.Run(ctx, pool, func(ctx context.Context, tx *txhooks.Tx) error {
		tx.AfterCommit(rec.hook("never"))
		tx.AfterRollback(rec.hook("rolled-back"))
		_, _ = tx.Exec(ctx, `INSERT INTO t VALUES (2)`)
		return sentinel
	})
	require.ErrorIs(t, err, sentinel)
	require.Equal(t, []string{"ok", "rolled-back"}, rec.got())

	require.PanicsWithValue(t, "fn panicked", func() {
		_ = txhooks.Run(ctx, pool, func(ctx context.Context, tx *txhooks.Tx) error {
			tx.AfterRollback(rec.hook("panic-rollback"))
			_, _ = tx.Exec(ctx, `INSERT INTO t VALUES (3)`)
			panic("fn panicked")
		})
	})
	require.Equal(t, []string{"ok", "rolled-back", "panic-rollback"}, rec.got())
	require.Equal(t, 1, count(t, pool))
}

func TestCancelledContextRollsBackAndRunsRollbackHooks(t *testing.T) {
	t.Parallel()
	pool := newTable(t)
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	err := txhooks.Run(ctx, pool, func(ctx context.Context, tx *txhooks.Tx) error {
		tx.AfterCommit(rec.hook("never"))
		tx.AfterRollback(rec.hook("rolled-back"))
		cancel()
		_, err := tx.Exec(ctx, `INSERT INTO t VALUES (1)`)
		return err
	})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, []string{"rolled-back"}, rec.got())
	require.Zero(t, count(t, pool))
}

func TestWrapAndHookAfterEnd(t *testing.T) {
	ctx, pool := withTable(t)
	raw, err := pool.Begin(ctx)
	require.NoError(t, err)
	tx := txhooks.Wrap(raw)
	require.Same(t, tx, txhooks.Wrap(tx), "wrapping a *Tx returns it")
	rec := &recorder{}
	tx.AfterCommit(rec.hook("c"))
	require.NoError(t, tx.Commit(ctx))
	tx.AfterCommit(rec.hook("late")) // logged, never run
	require.Equal(t, []string{"c"}, rec.got())

	// BeginTx with options.
	ro, err := txhooks.BeginTx(ctx, pool, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	require.NoError(t, err)
	_, err = ro.Exec(ctx, `INSERT INTO t VALUES (1)`)
	require.Error(t, err, "read-only transaction")
	require.NoError(t, ro.Rollback(ctx))
}

// A COMMIT whose outcome the client cannot know (the connection died) runs
// neither commit nor rollback hooks, only outcome-unknown hooks: the caller
// gets the error and decides.
func TestCommitWithLostConnectionRunsOnlyUnknownHooks(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	_, err := db.Pool.Exec(ctx, `CREATE TABLE t (v int)`)
	require.NoError(t, err)
	victim := db.NewPool(t, &pgtest.PoolOptions{AppName: "txhooks-victim"})
	tx, rec := begin(t, ctx, victim, 1)
	rec.hookOutcomes(tx)

	n, err := db.TerminateBackends(ctx, "txhooks-victim")
	require.NoError(t, err)
	require.Equal(t, 1, n)

	err = tx.Commit(ctx)
	require.Error(t, err)
	require.NotErrorIs(t, err, pgx.ErrTxCommitRollback)
	require.False(t, pgconn.SafeToRetry(err), "COMMIT was sent: %v", err)
	require.Equal(t, []string{"unknown"}, rec.got(), "outcome unknown: neither commit nor rollback hooks")
	require.Zero(t, count(t, db.Pool))
	// The transaction has ended: a deferred Rollback runs nothing more.
	_ = tx.Rollback(ctx)
	require.Equal(t, []string{"unknown"}, rec.got())
}

// A COMMIT that was never sent (the context ended first: pgx returns an
// error for which pgconn.SafeToRetry is true) certainly rolled back: rollback
// hooks run, commit hooks do not.
func TestCommitNeverSentRunsRollbackHooks(t *testing.T) {
	t.Parallel()
	pool := newTable(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tx, rec := begin(t, ctx, pool, 1)
	rec.hookOutcomes(tx)
	cancel()
	err := tx.Commit(ctx)
	require.Error(t, err)
	require.True(t, pgconn.SafeToRetry(err), "COMMIT was never sent: %v", err)
	require.Equal(t, []string{"rollback"}, rec.got())
	require.Zero(t, count(t, pool))
	_ = tx.Rollback(context.Background())
	require.Equal(t, []string{"rollback"}, rec.got(), "hooks run once")
}

// A COMMIT refused by the server with an ERROR (here a deferred constraint
// checked at commit) rolled the transaction back: rollback hooks run.
func TestCommitErrorRunsRollbackHooks(t *testing.T) {
	ctx, pool := withTable(t)
	_, err := pool.Exec(ctx, `CREATE TABLE u (v int UNIQUE DEFERRABLE INITIALLY DEFERRED)`)
	require.NoError(t, err)
	tx, rec := begin(t, ctx, pool)
	_, err = tx.Exec(ctx, `INSERT INTO u VALUES (1), (1)`)
	require.NoError(t, err)
	rec.hookOutcomes(tx)
	err = tx.Commit(ctx)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "23505", pgErr.Code)
	require.Equal(t, []string{"rollback"}, rec.got())
}

// A savepoint whose RELEASE was never sent is still part of the outer
// transaction: its hooks follow the outer transaction's outcome.
func TestSavepointReleaseNeverSentFollowsParent(t *testing.T) {
	ctx, pool := withTable(t)
	tx, rec := begin(t, ctx, pool)
	sp, err := tx.Savepoint(ctx)
	require.NoError(t, err)
	_, err = sp.Exec(ctx, `INSERT INTO t VALUES (1)`)
	require.NoError(t, err)
	sp.AfterCommit(rec.hook("sp-commit"))
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	require.Error(t, sp.Commit(cctx))
	require.Empty(t, rec.got())
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, []string{"sp-commit"}, rec.got())
	require.Equal(t, 1, count(t, pool), "the savepoint's row committed with the outer transaction")
}

// BeforeCommit hooks run before COMMIT and can veto it: the transaction then
// rolls back, rollback hooks run and Commit returns the hook's error. A
// savepoint's before-commit hooks follow it like commit hooks; those
// registered on Outermost run whatever the savepoint does.
func TestBeforeCommitRunsBeforeAndCanVeto(t *testing.T) {
	ctx, pool := withTable(t)
	// Runs before COMMIT, inside the transaction, in order.
	tx, rec := begin(t, ctx, pool)
	tx.BeforeCommit(func(ctx context.Context) error {
		_, err := tx.Exec(ctx, `INSERT INTO t VALUES (1)`)
		return err
	})
	tx.BeforeCommit(rec.hook("before-2"))
	tx.AfterCommit(rec.hook("commit"))
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, []string{"before-2", "commit"}, rec.got())
	require.Equal(t, 1, count(t, pool), "the hook's write committed")

	// A failing hook vetoes the commit.
	veto := errors.New("veto")
	tx, rec = begin(t, ctx, pool, 2)
	tx.BeforeCommit(func(context.Context) error { return veto })
	tx.BeforeCommit(rec.hook("never"))
	tx.AfterCommit(rec.hook("commit"))
	tx.AfterRollback(rec.hook("rollback"))
	require.ErrorIs(t, tx.Commit(ctx), veto)
	require.Equal(t, []string{"rollback"}, rec.got())
	require.Equal(t, 1, count(t, pool))
	require.ErrorIs(t, tx.Commit(ctx), pgx.ErrTxClosed)

	// Savepoints: dropped with a rolled-back savepoint unless registered on Outermost.
	tx, rec = begin(t, ctx, pool)
	sp, err := tx.Savepoint(ctx)
	require.NoError(t, err)
	inner, err := sp.Savepoint(ctx)
	require.NoError(t, err)
	require.Same(t, tx, inner.Outermost())
	require.Same(t, tx, tx.Outermost())
	inner.BeforeCommit(rec.hook("inner"))
	inner.Outermost().BeforeCommit(rec.hook("outermost"))
	require.NoError(t, inner.Commit(ctx))
	require.NoError(t, sp.Rollback(ctx))
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, []string{"outermost"}, rec.got())
}
