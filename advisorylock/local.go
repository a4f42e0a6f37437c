package advisorylock

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/txhooks"
)

// Local is the in-process implementation of Locker, for single-process
// applications and unit tests (NocoBase's local adapter). Keys, TTLs,
// reservations, Release, Extend, RunExclusive with renewal, tokens and Done
// behave as with a Manager, measured on the process's monotonic clock.
//
// What Local cannot offer: exclusivity across processes (all locks vanish
// with the process, which is also when they stop mattering), and a database
// check in CheckTx. Local's CheckTx reports whether the lock is held at the
// time of the call; when tx is a *txhooks.Tx it also keeps the key from the
// next holder until tx commits or rolls back (like the Manager's row lock),
// through the transaction's hooks; a COMMIT whose outcome is unknown (the
// connection broke) ends the transaction too and frees the pin. With a plain pgx.Tx there is nothing to
// learn the end of the transaction from, so nothing is blocked. Tokens
// increase per Local value. Two Local values never share keys (NocoBase's adapter shares
// one process-wide map; pass one Local around instead). No app namespace:
// keys are used as given.
type Local struct {
	mu       sync.Mutex // guards the fields below
	isClosed bool
	token    int64
	keys     map[string]*localKey
}

type localKey struct {
	holder  *Lock
	changed chan struct{} // closed and replaced when the holder leaves
	pins    int           // open *txhooks.Tx transactions that checked holder: it stays until they end
}

// NewLocal returns a ready Local; it needs no Start.
func NewLocal() *Local {
	return &Local{keys: make(map[string]*localKey)}
}

// Close releases every held lock (their Done channels close) and makes later
// calls return ErrClosed. Waiting calls return ErrClosed. Safe to call twice.
func (lc *Local) Close(ctx context.Context) error {
	lc.mu.Lock()
	if lc.isClosed {
		lc.mu.Unlock()
		return nil
	}
	lc.isClosed = true
	var held []*Lock
	for _, k := range lc.keys {
		if k.holder != nil {
			held = append(held, k.holder)
		}
		close(k.changed)
		k.changed = make(chan struct{})
	}
	lc.mu.Unlock()
	for _, l := range held {
		l.finish(stateReleased)
	}
	return nil
}

// Acquire takes key, waiting as long as ctx allows, with a lease of ttl
// (0 means DefaultTTL) that ends unless extended.
func (lc *Local) Acquire(ctx context.Context, key string, ttl time.Duration) (*Lock, error) {
	if err := checkArgs(key, ttl, "ttl"); err != nil {
		return nil, fmt.Errorf("advisorylock: acquire: %w", err)
	}
	if ttl == 0 {
		ttl = DefaultTTL
	}
	l, err := lc.take(ctx, key, ttl, true, time.Time{})
	if err != nil {
		return nil, fmt.Errorf("advisorylock: acquire %q: %w", key, err)
	}
	return l, nil
}

// TryAcquire takes key as a reservation with no expiry; see Manager.TryAcquire.
func (lc *Local) TryAcquire(ctx context.Context, key string, wait time.Duration) (*Lock, error) {
	if err := checkArgs(key, wait, "wait"); err != nil {
		return nil, fmt.Errorf("advisorylock: try acquire: %w", err)
	}
	var deadline time.Time
	if wait > 0 {
		deadline = time.Now().Add(wait)
	}
	l, err := lc.take(ctx, key, 0, wait > 0, deadline)
	switch {
	case err == errLocked:
		return nil, &LockAcquireError{Key: key, Reason: ReasonLocked}
	case err == errTimedOut:
		return nil, &LockAcquireError{Key: key, Reason: ReasonTimedOut}
	case err != nil:
		return nil, fmt.Errorf("advisorylock: try acquire %q: %w", key, err)
	}
	return l, nil
}

// RunExclusive waits for key, runs fn with the lease renewed, and releases;
// see Manager.RunExclusive.
func (lc *Local) RunExclusive(ctx context.Context, key string, ttl time.Duration, fn func(ctx context.Context, l *Lock) error) error {
	if ttl == 0 {
		ttl = DefaultTTL
	}
	l, err := lc.Acquire(ctx, key, ttl)
	if err != nil {
		return err
	}
	return l.runHeld(ctx, ttl, func(ctx context.Context) error { return fn(ctx, l) })
}

var errLocked = fmt.Errorf("locked")

func (lc *Local) take(ctx context.Context, key string, ttl time.Duration, wait bool, deadline time.Time) (*Lock, error) {
	var deadlineC <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		deadlineC = t.C
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		lc.mu.Lock()
		if lc.isClosed {
			lc.mu.Unlock()
			return nil, ErrClosed
		}
		k := lc.keys[key]
		if k == nil {
			k = &localKey{changed: make(chan struct{})}
			lc.keys[key] = k
		}
		if k.holder == nil {
			lc.token++
			l := newLock(lc, key, lc.token, 0, time.Now(), ttl)
			k.holder = l
			lc.mu.Unlock()
			return l, nil
		}
		changed := k.changed
		lc.mu.Unlock()
		if !wait {
			return nil, errLocked
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadlineC:
			return nil, errTimedOut
		}
	}
}

func (lc *Local) defaultTTL() time.Duration { return DefaultTTL }

func (lc *Local) closed() bool {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.isClosed
}

func (lc *Local) release(ctx context.Context, l *Lock) error {
	lc.mu.Lock()
	k := lc.keys[l.key]
	mine := k != nil && k.holder == l
	lc.mu.Unlock()
	if mine {
		l.finish(stateReleased) // forget frees the key
	}
	return nil
}

func (lc *Local) extend(ctx context.Context, l *Lock, ttl time.Duration) error {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if k := lc.keys[l.key]; k == nil || k.holder != l {
		return ErrNotHeld
	}
	return nil
}

func (lc *Local) checkTx(ctx context.Context, l *Lock, tx pgx.Tx) error {
	if _, err := commitGuard(tx); err != nil {
		return err
	}
	htx, hooks := tx.(*txhooks.Tx)
	if hooks {
		// The pin lasts until the whole transaction ends, whatever its
		// savepoints do.
		htx = htx.Outermost()
		// Hooks registered on a transaction that already ended never run:
		// make sure it is open before pinning the key to it.
		if _, err := tx.Exec(ctx, `SELECT 1`); err != nil {
			return err
		}
	}
	lc.mu.Lock()
	defer lc.mu.Unlock()
	k := lc.keys[l.key]
	if k == nil || k.holder != l {
		return ErrNotHeld
	}
	if hooks {
		k.pins++
		var once sync.Once
		unpin := func(context.Context) error {
			once.Do(func() { lc.unpin(l.key, k) })
			return nil
		}
		htx.AfterCommit(unpin)
		htx.AfterRollback(unpin)
		// Committed or not, a transaction whose COMMIT outcome is unknown
		// is over: the pin must not outlive it.
		htx.AfterOutcomeUnknown(unpin)
	}
	return nil
}

// unpin ends one pin of k; the last one frees a holder that ended meanwhile.
func (lc *Local) unpin(key string, k *localKey) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	k.pins--
	if k.pins == 0 && k.holder != nil && !k.holder.held() {
		lc.freeLocked(key, k)
	}
}

// freeLocked removes k's holder and wakes the waiters. lc.mu must be held.
func (lc *Local) freeLocked(key string, k *localKey) {
	k.holder = nil
	close(k.changed)
	// The key's entry goes away with its last holder, so the map does not
	// grow with every key ever used (unlike NocoBase's). Waiters hold the
	// closed channel and re-create the entry.
	if lc.keys[key] == k {
		delete(lc.keys, key)
	}
}

func (lc *Local) forget(l *Lock, lost bool) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	k := lc.keys[l.key]
	if k == nil || k.holder != l || k.pins > 0 {
		return // pinned: the last unpin frees it
	}
	lc.freeLocked(l.key, k)
}
