package advisorylock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// Locker is what Manager and Local have in common: code that takes locks
// can accept a Locker and run against Postgres in a cluster or in-process in
// a single-process app or a unit test.
type Locker interface {
	Acquire(ctx context.Context, key string, ttl time.Duration) (*Lock, error)
	TryAcquire(ctx context.Context, key string, wait time.Duration) (*Lock, error)
	RunExclusive(ctx context.Context, key string, ttl time.Duration, fn func(ctx context.Context, l *Lock) error) error
	Close(ctx context.Context) error
}

var (
	_ Locker = (*Manager)(nil)
	_ Locker = (*Local)(nil)
)

// backend is the implementation behind a Lock: the Manager (Postgres) or Local.
type backend interface {
	// release frees l's lease if l still holds it; a no-op otherwise.
	release(ctx context.Context, l *Lock) error
	// extend sets l's lease to end ttl from now. It returns ErrNotHeld
	// (wrapped or not) when l no longer holds the key.
	extend(ctx context.Context, l *Lock, ttl time.Duration) error
	checkTx(ctx context.Context, l *Lock, tx pgx.Tx) error
	// forget is called exactly once, when l stops being held locally
	// (released or lost): the backend drops it from its registry and wakes
	// local waiters for its key.
	forget(l *Lock, lost bool)
	defaultTTL() time.Duration
	closed() bool
}

type lockState int

const (
	stateHeld lockState = iota
	stateReleased
	stateLost
)

// Lock is one grant of a key: from Acquire, TryAcquire or RunExclusive until
// Release, or until the lease is lost. A Lock is safe for concurrent use.
//
// A Lock is a single grant, not a reusable handle: once released or lost it
// stays so, and Extend, CheckTx and RunExclusive on it return ErrNotHeld (a
// deliberate difference from NocoBase's ILock, which re-acquires). Take the
// key again with the Manager to get a new grant and a new token.
type Lock struct {
	b     backend
	key   string
	token int64
	owner int32 // owner_id of the Manager's liveness session at grant; 0 for Local
	done  chan struct{}

	// transferred is set when Release passed the lease on to the next in
	// line (its end then wakes no local waiter: this instance, if it has
	// waiters, is in the key's FIFO and will be designated).
	transferred atomic.Bool
	// unfit: a designated lease not yet set to the TTL its holder asked for
	// (see Manager.adopt and Manager.fit); set before the Lock is shared.
	unfit bool

	mu       sync.Mutex // guards the fields below
	state    lockState
	timer    *time.Timer // fires at the local deadline; nil when the lease has no expiry
	timerGen uint64      // generation of timer: a superseded timer that already fired does nothing
	freed    bool        // the backend release has succeeded: Release is a no-op from now on
	cause    string      // why a lost lease was lost (telemetry.go); "" until lose
	granted  time.Time   // when the grant was made (for pgcoord.lock.hold.duration)
}

func newLock(b backend, key string, token int64, owner int32, sent time.Time, ttl time.Duration) *Lock {
	l := &Lock{b: b, key: key, token: token, owner: owner, done: make(chan struct{}), granted: time.Now()}
	l.mu.Lock()
	l.setDeadlineLocked(sent, ttl)
	l.mu.Unlock()
	return l
}

// Key returns the key as passed to Acquire (without the app namespace).
func (l *Lock) Key() string { return l.key }

// Token returns the fencing token of this grant: it is strictly larger than
// the token of every earlier grant of the same key, and no other key ever
// has it (lease rows take disjoint blocks of one non-cycling sequence). A resource protected
// by the lock can reject writes carrying a token lower than the highest it
// has seen. Local tokens increase per Local value.
func (l *Lock) Token() int64 { return l.token }

// Done returns a channel closed when this grant ends: after Release, when
// the lease expires (its TTL passed without Extend or renewal), when another
// holder took it over, or when the instance lost its liveness session. It is
// never reopened.
func (l *Lock) Done() <-chan struct{} { return l.done }

// held reports whether the lock is still held as far as this process knows.
func (l *Lock) held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state == stateHeld
}

// errNotHeld is ErrNotHeld, joined with ErrClosed when the Manager or Local is closed.
func (l *Lock) errNotHeld() error {
	if l.b.closed() {
		return errors.Join(ErrNotHeld, ErrClosed)
	}
	return ErrNotHeld
}

// setDeadlineLocked arms the expiry timer. sent is the local time just before
// the statement that set the lease was sent: the database computed the lease
// end from its now(), which is later, so sent+ttl never lies beyond the
// database's expiry (the local clock only measures a duration here).
func (l *Lock) setDeadlineLocked(sent time.Time, ttl time.Duration) {
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	l.timerGen++
	if ttl <= 0 {
		return
	}
	gen := l.timerGen
	l.timer = time.AfterFunc(time.Until(sent.Add(ttl)), func() { l.expire(gen) })
}

// expire ends the lease at its local deadline, unless the timer of
// generation gen was superseded (Extend re-armed it) after it fired.
func (l *Lock) expire(gen uint64) {
	l.mu.Lock()
	current := l.timerGen == gen
	l.mu.Unlock()
	if current {
		l.lose(causeExpired)
	}
}

// lose ends a held lease as lost, for cause.
func (l *Lock) lose(cause string) {
	l.mu.Lock()
	if l.state == stateHeld && l.cause == "" {
		l.cause = cause
	}
	l.mu.Unlock()
	l.finish(stateLost)
}

// lostCause is why the lease was lost: the cause given to lose, else the
// liveness session's end (every other path that loses a lease).
func (l *Lock) lostCause() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cause == "" {
		return causeLiveness
	}
	return l.cause
}

// finish moves a held lock to released or lost, exactly once.
func (l *Lock) finish(to lockState) bool {
	l.mu.Lock()
	if l.state != stateHeld {
		if to == stateReleased {
			l.freed = true
		}
		l.mu.Unlock()
		return false
	}
	l.state = to
	if to == stateReleased {
		l.freed = true
	}
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	close(l.done)
	l.mu.Unlock()
	l.b.forget(l, to == stateLost)
	return true
}

// Release frees the lock. It is idempotent, and it never frees a later
// holder's lock: the lease is released only if it still carries this
// grant's token. Releasing a lock whose lease already expired or was taken
// over returns nil. When ctx ends before the release reached the database
// the error is returned and the lock is still held; retry, or let the TTL
// (or the instance's session) end it.
func (l *Lock) Release(ctx context.Context) error {
	l.mu.Lock()
	freed := l.freed
	l.mu.Unlock()
	if freed {
		return nil
	}
	if err := l.b.release(ctx, l); err != nil {
		return fmt.Errorf("advisorylock: release %q: %w", l.key, err)
	}
	l.finish(stateReleased)
	return nil
}

// Extend sets the lease to end ttl from now (database clock), converting a
// reservation from TryAcquire into a lease with a TTL. It returns ErrNotHeld
// (wrapped) when the lock is no longer held, and ErrInvalidTTL when ttl <= 0.
func (l *Lock) Extend(ctx context.Context, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("advisorylock: extend %q: %w: ttl %v must be positive", l.key, ErrInvalidTTL, ttl)
	}
	if !l.held() {
		return fmt.Errorf("advisorylock: extend %q (token %d): %w", l.key, l.token, l.errNotHeld())
	}
	sent := time.Now()
	if err := l.b.extend(ctx, l, ttl); err != nil {
		if errors.Is(err, ErrNotHeld) {
			l.lose(causeNotHeld)
		}
		return fmt.Errorf("advisorylock: extend %q (token %d): %w", l.key, l.token, err)
	}
	l.mu.Lock()
	if l.state != stateHeld {
		// The local deadline passed while the statement ran; the lease is
		// considered lost here, so give it back rather than keep it blocked.
		l.mu.Unlock()
		_ = l.b.release(context.WithoutCancel(ctx), l)
		return fmt.Errorf("advisorylock: extend %q (token %d): %w", l.key, l.token, ErrNotHeld)
	}
	l.setDeadlineLocked(sent, ttl)
	l.mu.Unlock()
	return nil
}

// CheckTx verifies, inside the caller's transaction, that this grant still
// holds the lease, and locks the lease row (FOR KEY SHARE) so that no other
// instance can take the lock over until tx commits or rolls back: writes made
// in tx after a nil CheckTx are fenced. It returns ErrNotHeld (wrapped) when
// the lease was released, expired, taken over or its owner's liveness
// session ended. Renewals and Release are not blocked by the row lock.
//
// Use it in a READ COMMITTED transaction (the default) or as the first
// statement of a REPEATABLE READ one: an older snapshot cannot see a newer
// grant.
//
// Savepoints: a row lock taken inside a savepoint ends when that savepoint
// (or an enclosing one) is rolled back, while the transaction goes on. So:
//   - tx at the outermost level (a pgx.Tx from Begin, or a *txhooks.Tx that
//     is not a savepoint): fenced until tx ends, whatever savepoints opened
//     later do.
//   - tx a *txhooks.Tx savepoint (txhooks.Tx.Savepoint or Begin): CheckTx
//     also registers a check on the outermost transaction that runs right
//     before its COMMIT (txhooks.Tx.BeforeCommit): it verifies that no other
//     grant of the key was made since this one and locks the row until the
//     COMMIT ends. When that check fails, COMMIT is not sent: the
//     transaction rolls back and Commit returns ErrNotHeld (wrapped). So the
//     commit is fenced whatever the savepoints did in between.
//   - tx a savepoint of a plain pgx.Tx (pgx.Tx.Begin), wrapped by
//     txhooks.Wrap or not: refused with ErrSavepoint, nothing locked.
//   - savepoints opened with SQL (SAVEPOINT …) are not visible to CheckTx:
//     call it at the outermost level, before any such savepoint.
//
// On a Local lock CheckTx checks that the lock is held at the time of the
// call and, only when tx is a *txhooks.Tx, keeps the key from the next
// holder until tx's outermost transaction ends (see Local).
func (l *Lock) CheckTx(ctx context.Context, tx pgx.Tx) error {
	if tx == nil {
		return fmt.Errorf("advisorylock: check %q: nil transaction", l.key)
	}
	if !l.held() {
		return fmt.Errorf("advisorylock: check %q (token %d): %w", l.key, l.token, l.errNotHeld())
	}
	if err := l.b.checkTx(ctx, l, tx); err != nil {
		return fmt.Errorf("advisorylock: check %q (token %d): %w", l.key, l.token, err)
	}
	return nil
}

// RunExclusive sets the lease to ttl (0 means the default TTL), runs fn while
// renewing the lease every ttl/3 so that fn is never cut short by its TTL,
// and releases the lock when fn returns, even if it panics. If the grant
// ends while fn runs (lease lost, Close, or fn released it), fn's context is
// cancelled with cause ErrLockLost; then RunExclusive returns fn's error, or
// ErrLockLost (wrapped) if fn returned nil. On a lock that is no longer held
// it returns ErrNotHeld and does not call fn. Unlike NocoBase's handle, the
// TTL here never pre-empts fn (the manager and handle forms behave the same).
func (l *Lock) RunExclusive(ctx context.Context, ttl time.Duration, fn func(ctx context.Context) error) error {
	if ttl < 0 {
		return fmt.Errorf("advisorylock: run exclusive %q: %w: ttl %v is negative", l.key, ErrInvalidTTL, ttl)
	}
	if ttl == 0 {
		ttl = l.b.defaultTTL()
	}
	if err := l.Extend(ctx, ttl); err != nil {
		return err
	}
	return l.runHeld(ctx, ttl, fn)
}

// runHeld runs fn under the held lease with renewal, then releases.
func (l *Lock) runHeld(ctx context.Context, ttl time.Duration, fn func(ctx context.Context) error) (err error) {
	fnCtx, cancel := context.WithCancelCause(ctx)
	stop := make(chan struct{})
	var (
		wg    sync.WaitGroup
		ended bool // the grant ended while fn ran; written by renew before wg.Done
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		ended = l.renew(fnCtx, stop, ttl, cancel)
	}()
	defer func() {
		close(stop)
		wg.Wait()
		cancel(nil)
		relErr := l.Release(context.WithoutCancel(ctx))
		switch {
		case err != nil:
		case ended:
			err = fmt.Errorf("advisorylock: run exclusive %q (token %d): %w", l.key, l.token, ErrLockLost)
		default:
			err = relErr
		}
	}()
	return fn(fnCtx)
}

// renew keeps the lease alive until stop is closed, and cancels fn's context
// with cause ErrLockLost when the grant ends first (lost, or released by
// Close or by fn itself); it reports whether that happened. A failed renewal
// is retried on the next tick; the local deadline (armed by each successful
// renewal) ends the lease if renewals keep failing for a whole TTL.
func (l *Lock) renew(ctx context.Context, stop <-chan struct{}, ttl time.Duration, cancel context.CancelCauseFunc) bool {
	every := ttl / 3
	if every < time.Millisecond {
		every = time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return false
		case <-l.done:
			select {
			case <-stop: // fn returned at the same time: not cut short
				return false
			default:
			}
			cancel(ErrLockLost)
			return true
		case <-t.C:
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), ttl)
			err := l.Extend(rctx, ttl)
			rcancel()
			_ = err // ErrNotHeld closed done (handled above); other errors are retried
		}
	}
}

func validText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return false
		}
	}
	return true
}
