package txhooks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/jackc/pgx/v5"
)

// Hook is work scheduled on a transaction's outcome. The context is never
// cancelled; a returned error is logged.
type Hook func(ctx context.Context) error

// Beginner is anything that can start a transaction: *pgxpool.Pool, *pgx.Conn,
// or a pgx.Tx (which starts a savepoint).
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// TxBeginner starts a transaction with options: *pgxpool.Pool and *pgx.Conn.
type TxBeginner interface {
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
}

// Tx is a pgx.Tx with after-commit and after-rollback hooks. It implements
// pgx.Tx, so it can be passed wherever one is expected. Like pgx.Tx it is not
// meant for concurrent use, but registering hooks is safe from any goroutine.
type Tx struct {
	pgx.Tx

	parent *Tx // nil for the outermost transaction

	mu         sync.Mutex // guards the fields below
	onCommit   []Hook
	onRollback []Hook
	ended      bool
	logger     *slog.Logger
}

// Begin starts a transaction on db and wraps it.
func Begin(ctx context.Context, db Beginner) (*Tx, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return Wrap(tx), nil
}

// BeginTx starts a transaction with options on db and wraps it.
func BeginTx(ctx context.Context, db TxBeginner, opts pgx.TxOptions) (*Tx, error) {
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return Wrap(tx), nil
}

// Wrap returns tx with hooks. A *Tx is returned as it is. Wrapping a pgx.Tx
// that is itself a savepoint of a *Tx is not supported: use [Tx.Begin].
// After Wrap, end the transaction through the returned *Tx, or its hooks never run.
func Wrap(tx pgx.Tx) *Tx {
	if t, ok := tx.(*Tx); ok {
		return t
	}
	return &Tx{Tx: tx}
}

// Run begins a transaction on db, calls fn and commits when fn returns nil.
// When fn returns an error the transaction is rolled back and the error
// returned; when fn panics it is rolled back and the panic continues. Commit
// hooks have run by the time Run returns nil.
func Run(ctx context.Context, db Beginner, fn func(ctx context.Context, tx *Tx) error) (err error) {
	tx, err := Begin(ctx, db)
	if err != nil {
		return fmt.Errorf("txhooks: begin: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
			panic(p)
		}
	}()
	if err := fn(ctx, tx); err != nil {
		if rbErr := tx.Rollback(context.WithoutCancel(ctx)); rbErr != nil && !errors.Is(rbErr, pgx.ErrTxClosed) {
			return errors.Join(err, fmt.Errorf("txhooks: rollback: %w", rbErr))
		}
		return err
	}
	return tx.Commit(ctx)
}

// SetLogger sets the logger for failing hooks of this transaction and of
// savepoints begun from it after the call. Defaults to slog.Default().
func (t *Tx) SetLogger(l *slog.Logger) {
	t.mu.Lock()
	t.logger = l
	t.mu.Unlock()
}

func (t *Tx) log() *slog.Logger {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.logger != nil {
		return t.logger
	}
	return slog.Default()
}

// AfterCommit schedules fn to run after the outermost transaction commits.
func (t *Tx) AfterCommit(fn Hook) { t.add(fn, true) }

// AfterRollback schedules fn to run after this transaction (or savepoint)
// rolls back, or after the outermost transaction rolls back once this
// savepoint was released into it.
func (t *Tx) AfterRollback(fn Hook) { t.add(fn, false) }

func (t *Tx) add(fn Hook, commit bool) {
	if fn == nil {
		return
	}
	t.mu.Lock()
	if t.ended {
		t.mu.Unlock()
		t.log().Error("txhooks: hook registered on a transaction that already ended; it will not run", slog.Bool("after_commit", commit))
		return
	}
	if commit {
		t.onCommit = append(t.onCommit, fn)
	} else {
		t.onRollback = append(t.onRollback, fn)
	}
	t.mu.Unlock()
}

// Begin starts a savepoint (a pseudo nested transaction). The returned pgx.Tx
// is a *Tx; [Tx.Savepoint] returns it typed.
func (t *Tx) Begin(ctx context.Context) (pgx.Tx, error) {
	return t.Savepoint(ctx)
}

// Savepoint starts a savepoint and returns it as a *Tx.
func (t *Tx) Savepoint(ctx context.Context) (*Tx, error) {
	inner, err := t.Tx.Begin(ctx)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	l := t.logger
	t.mu.Unlock()
	return &Tx{Tx: inner, parent: t, logger: l}, nil
}

// take marks the transaction ended and returns its hooks; it returns ok=false
// when it had already ended, so hooks never run twice.
func (t *Tx) take() (commit, rollback []Hook, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ended {
		return nil, nil, false
	}
	t.ended = true
	commit, rollback = t.onCommit, t.onRollback
	t.onCommit, t.onRollback = nil, nil
	return commit, rollback, true
}

// Commit commits the transaction (or releases the savepoint) and then runs
// hooks as described in the package documentation.
func (t *Tx) Commit(ctx context.Context) error {
	err := t.Tx.Commit(ctx)
	if errors.Is(err, pgx.ErrTxClosed) {
		return err // already ended through this wrapper or the inner tx: hooks were handled then
	}
	commit, rollback, ok := t.take()
	if !ok {
		return err
	}
	hctx := context.WithoutCancel(ctx)
	switch {
	case err == nil && t.parent != nil:
		t.parent.mu.Lock()
		t.parent.onCommit = append(t.parent.onCommit, commit...)
		t.parent.onRollback = append(t.parent.onRollback, rollback...)
		t.parent.mu.Unlock()
	case err == nil:
		t.run(hctx, commit, "after_commit")
	case errors.Is(err, pgx.ErrTxCommitRollback):
		t.run(hctx, rollback, "after_rollback")
	default:
		if len(commit)+len(rollback) > 0 {
			t.log().WarnContext(ctx, "txhooks: commit outcome unknown; no hooks run", slog.Any("error", err), slog.Int("commit_hooks", len(commit)), slog.Int("rollback_hooks", len(rollback)))
		}
	}
	return err
}

// Rollback rolls back the transaction (or the savepoint) and runs its
// rollback hooks. Calling it after Commit is a no-op that returns
// pgx.ErrTxClosed, as with pgx, so `defer tx.Rollback(ctx)` is safe.
func (t *Tx) Rollback(ctx context.Context) error {
	err := t.Tx.Rollback(ctx)
	if errors.Is(err, pgx.ErrTxClosed) {
		return err
	}
	// Whether or not ROLLBACK itself succeeded the work is gone: a failed
	// ROLLBACK means the connection broke, and the server aborts the
	// transaction when its session ends.
	_, rollback, ok := t.take()
	if ok {
		t.run(context.WithoutCancel(ctx), rollback, "after_rollback")
	}
	return err
}

func (t *Tx) run(ctx context.Context, hooks []Hook, kind string) {
	for i, h := range hooks {
		if err := safeCall(ctx, h); err != nil {
			t.log().ErrorContext(ctx, "txhooks: hook failed", slog.String("hook", kind), slog.Int("index", i), slog.Any("error", err))
		}
	}
}

func safeCall(ctx context.Context, h Hook) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return h(ctx)
}
