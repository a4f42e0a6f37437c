package txhooks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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

	mu     sync.Mutex // guards the fields below
	hooks  hooks
	ended  bool
	logger *slog.Logger
}

// hooks are the hooks registered on a transaction or savepoint, by kind.
type hooks struct {
	before, commit, rollback, unknown []Hook
}

func (h *hooks) append(o hooks) {
	h.before = append(h.before, o.before...)
	h.commit = append(h.commit, o.commit...)
	h.rollback = append(h.rollback, o.rollback...)
	h.unknown = append(h.unknown, o.unknown...)
}

func (h hooks) len() int { return len(h.before) + len(h.commit) + len(h.rollback) + len(h.unknown) }

// hook kinds
const (
	kindBefore = iota
	kindCommit
	kindRollback
	kindUnknown
)

var kindNames = [...]string{kindBefore: "before_commit", kindCommit: "after_commit", kindRollback: "after_rollback", kindUnknown: "after_outcome_unknown"}

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

// Outermost returns the outermost transaction of a savepoint begun with
// [Tx.Begin] or [Tx.Savepoint], and t itself when t is not such a savepoint.
// Hooks registered on it follow the outcome of the whole transaction, not of
// a savepoint that may be rolled back.
func (t *Tx) Outermost() *Tx {
	for t.parent != nil {
		t = t.parent
	}
	return t
}

// BeforeCommit schedules fn to run on the outermost transaction just before
// its COMMIT is sent, in registration order, with Commit's context. fn may
// run statements on the transaction. If fn returns an error or panics,
// COMMIT is not sent: the transaction is rolled back, rollback hooks run,
// and Commit returns fn's error (wrapped). Like commit hooks, the hooks of
// a savepoint move to the parent when it is released and are dropped when
// it rolls back; register on [Tx.Outermost] to guard the commit whatever
// the savepoints do.
func (t *Tx) BeforeCommit(fn Hook) { t.add(fn, kindBefore) }

// AfterCommit schedules fn to run after the outermost transaction commits.
func (t *Tx) AfterCommit(fn Hook) { t.add(fn, kindCommit) }

// AfterRollback schedules fn to run after this transaction (or savepoint)
// rolls back, or after the outermost transaction rolls back once this
// savepoint was released into it. A COMMIT that was never sent or that the
// server refused counts as a rollback (see the package documentation).
func (t *Tx) AfterRollback(fn Hook) { t.add(fn, kindRollback) }

// AfterOutcomeUnknown schedules fn to run when the outermost COMMIT was sent
// but its outcome cannot be known (the connection broke before the answer):
// the transaction is over, committed or not. Use it to release what must
// not outlive the transaction whatever its outcome, or to reconcile. Like
// commit hooks, the hooks of a savepoint move to the parent when it is
// released and are dropped when it rolls back.
func (t *Tx) AfterOutcomeUnknown(fn Hook) { t.add(fn, kindUnknown) }

func (t *Tx) add(fn Hook, kind int) {
	if fn == nil {
		return
	}
	t.mu.Lock()
	if t.ended {
		t.mu.Unlock()
		t.log().Error("txhooks: hook registered on a transaction that already ended; it will not run", slog.String("hook", kindNames[kind]))
		return
	}
	switch kind {
	case kindBefore:
		t.hooks.before = append(t.hooks.before, fn)
	case kindCommit:
		t.hooks.commit = append(t.hooks.commit, fn)
	case kindRollback:
		t.hooks.rollback = append(t.hooks.rollback, fn)
	default:
		t.hooks.unknown = append(t.hooks.unknown, fn)
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
func (t *Tx) take() (hooks, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ended {
		return hooks{}, false
	}
	t.ended = true
	h := t.hooks
	t.hooks = hooks{}
	return h, true
}

// adopt moves a released savepoint's hooks to t.
func (t *Tx) adopt(ctx context.Context, h hooks) {
	t.mu.Lock()
	ended := t.ended
	if !ended {
		t.hooks.append(h)
	}
	t.mu.Unlock()
	if ended && h.len() > 0 {
		t.log().ErrorContext(ctx, "txhooks: savepoint ended after its parent; its hooks will not run", slog.Int("hooks", h.len()))
	}
}

// Commit commits the transaction (or releases the savepoint) and then runs
// hooks as described in the package documentation. On the outermost
// transaction, before-commit hooks run first; when one fails the transaction
// is rolled back instead and its error returned.
func (t *Tx) Commit(ctx context.Context) error {
	if t.parent == nil {
		if err := t.runBefore(ctx); err != nil {
			// ErrTxClosed: ended already, hooks were handled then.
			rbErr := t.Rollback(context.WithoutCancel(ctx))
			if rbErr != nil && !errors.Is(rbErr, pgx.ErrTxClosed) {
				err = errors.Join(err, fmt.Errorf("txhooks: rollback: %w", rbErr))
			}
			return err
		}
	}
	err := t.Tx.Commit(ctx)
	if errors.Is(err, pgx.ErrTxClosed) {
		return err // already ended through this wrapper or the inner tx: hooks were handled then
	}
	h, ok := t.take()
	if !ok {
		return err
	}
	if t.parent != nil {
		// Released, or RELEASE failed: either way what the savepoint did is
		// still part of the parent (a RELEASE never sent leaves the savepoint
		// open, and COMMIT commits it) or the parent can only roll back (a
		// refused RELEASE means the transaction is aborted). The outermost
		// outcome decides.
		t.parent.adopt(ctx, h)
		return err
	}
	hctx := context.WithoutCancel(ctx)
	switch commitOutcome(err) {
	case committed:
		t.run(hctx, h.commit, kindCommit)
	case rolledBack:
		t.run(hctx, h.rollback, kindRollback)
	default:
		if h.len() > 0 {
			t.log().WarnContext(ctx, "txhooks: commit outcome unknown; only outcome-unknown hooks run", slog.Any("error", err),
				slog.Int("commit_hooks", len(h.commit)), slog.Int("rollback_hooks", len(h.rollback)), slog.Int("unknown_hooks", len(h.unknown)))
		}
		t.run(hctx, h.unknown, kindUnknown)
	}
	return err
}

// runBefore runs the before-commit hooks, including those that hooks add,
// and returns the first failure.
func (t *Tx) runBefore(ctx context.Context) error {
	for {
		t.mu.Lock()
		before := t.hooks.before
		t.hooks.before = nil
		ended := t.ended
		t.mu.Unlock()
		if len(before) == 0 || ended {
			return nil
		}
		for i, h := range before {
			if err := safeCall(ctx, h); err != nil {
				t.log().DebugContext(ctx, "txhooks: before-commit hook failed; rolling back", slog.Int("index", i), slog.Any("error", err))
				return fmt.Errorf("txhooks: before commit: %w", err)
			}
		}
	}
}

type outcome int

const (
	committed outcome = iota
	rolledBack
	unknown
)

// commitOutcome classifies the error of the outermost COMMIT.
func commitOutcome(err error) outcome {
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		return committed
	case errors.Is(err, pgx.ErrTxCommitRollback):
		// The transaction had failed: PostgreSQL answered COMMIT with ROLLBACK.
		return rolledBack
	case pgconn.SafeToRetry(err):
		// COMMIT never reached the server (e.g. the context ended before it
		// was sent). pgx closes a connection left inside a transaction, and
		// the server aborts the transaction when the session ends.
		return rolledBack
	case errors.As(err, &pgErr) && severity(pgErr) == "ERROR":
		// The server refused COMMIT (a deferred constraint, a serialization
		// failure): an ERROR aborts the transaction. FATAL and PANIC end the
		// session and may come after the commit was made durable (e.g. while
		// waiting for synchronous replication): unknown.
		return rolledBack
	}
	return unknown
}

func severity(e *pgconn.PgError) string {
	if e.SeverityUnlocalized != "" {
		return e.SeverityUnlocalized
	}
	return e.Severity
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
	h, ok := t.take()
	if ok {
		t.run(context.WithoutCancel(ctx), h.rollback, kindRollback)
	}
	return err
}

func (t *Tx) run(ctx context.Context, hooks []Hook, kind int) {
	for i, h := range hooks {
		if err := safeCall(ctx, h); err != nil {
			t.log().ErrorContext(ctx, "txhooks: hook failed", slog.String("hook", kindNames[kind]), slog.Int("index", i), slog.Any("error", err))
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
