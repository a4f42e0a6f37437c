package advisorylock

import (
	"errors"
	"fmt"

	"github.com/pgcoord/pgcoord/internal/lifecycle"
)

var (
	// ErrClosed is returned by every call on a Manager or Local after Close.
	// It Is the ErrClosed of every pgcoord package (app.ErrClosed).
	ErrClosed = lifecycle.Closed("advisorylock: closed")

	// ErrAlreadyStarted is returned by [Manager.Start] when called a second
	// time. It Is the ErrAlreadyStarted of every pgcoord package.
	ErrAlreadyStarted = lifecycle.AlreadyStarted("advisorylock: already started")

	// ErrNotStarted is returned by Manager calls made before Start.
	ErrNotStarted = errors.New("advisorylock: manager not started")

	// ErrNotHeld is returned (wrapped) by Extend, CheckTx and the handle form
	// of RunExclusive when the lock is no longer held: it was released, its
	// lease expired or was taken over, or its instance lost its liveness
	// session. NocoBase reports this case as "lock is not active".
	ErrNotHeld = errors.New("advisorylock: lock not held")

	// ErrLockLost is the cause of the context passed to a RunExclusive
	// function when the lease is lost while the function runs, and is returned
	// (wrapped) by RunExclusive when the function returned nil but the lease
	// was lost before it finished.
	ErrLockLost = errors.New("advisorylock: lease lost")

	// ErrUnavailable is returned (wrapped) by TryAcquire with wait == 0 while
	// the Manager's liveness session is reconnecting: no lease can be granted
	// to an instance that Postgres does not see alive. Acquire waits instead.
	ErrUnavailable = errors.New("advisorylock: liveness session unavailable")

	// ErrInvalidKey is returned (wrapped) for an empty key, a key longer than
	// MaxKeyBytes, or a key that PostgreSQL text cannot hold (NUL bytes,
	// invalid UTF-8). Nothing is written.
	ErrInvalidKey = errors.New("advisorylock: invalid key")

	// ErrSavepoint is returned (wrapped) by CheckTx on a savepoint that it
	// cannot fence: a savepoint of a plain pgx.Tx (pgx.Tx.Begin on a
	// transaction), wrapped by txhooks.Wrap or not. The row lock CheckTx
	// takes inside a savepoint ends when the savepoint is rolled back, and a
	// plain pgx.Tx gives no way to re-check before the outer COMMIT. Call
	// CheckTx at the outermost level, or use a *txhooks.Tx savepoint
	// (txhooks.Tx.Savepoint), which CheckTx fences at commit. Nothing is
	// locked.
	ErrSavepoint = errors.New("advisorylock: CheckTx in a pgx savepoint cannot fence the commit")

	// ErrInvalidConfig is returned (wrapped) by New and ForceRelease for a
	// Config that fails validation; the message names the field.
	ErrInvalidConfig = errors.New("advisorylock: invalid configuration")

	// ErrInvalidTTL is returned (wrapped) for a negative TTL or wait, or a
	// non-positive TTL passed to Extend. Nothing is written.
	ErrInvalidTTL = errors.New("advisorylock: invalid duration")
)

// Reason says why TryAcquire failed.
type Reason string

const (
	// ReasonLocked: wait was 0 and the lock was held ("lock is locked").
	ReasonLocked Reason = "locked"
	// ReasonTimedOut: the lock stayed held for the whole wait ("lock acquire timed out").
	ReasonTimedOut Reason = "timed out"
)

// LockAcquireError is returned by TryAcquire when the lock could not be taken.
// Test for it with errors.As; the type name matches NocoBase's LockAcquireError.
type LockAcquireError struct {
	// Key is the key as the caller passed it (without the app namespace).
	Key string
	// Reason is ReasonLocked or ReasonTimedOut.
	Reason Reason
}

func (e *LockAcquireError) Error() string {
	if e.Reason == ReasonTimedOut {
		return fmt.Sprintf("advisorylock: acquire %q: lock acquire timed out", e.Key)
	}
	return fmt.Sprintf("advisorylock: acquire %q: lock is %s", e.Key, e.Reason)
}

// MaxKeyBytes is the longest key accepted, in bytes.
const MaxKeyBytes = 1024

func validateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty", ErrInvalidKey)
	case len(key) > MaxKeyBytes:
		return fmt.Errorf("%w: %d bytes, longer than %d", ErrInvalidKey, len(key), MaxKeyBytes)
	case !validText(key):
		return fmt.Errorf("%w: %q contains a NUL byte or invalid UTF-8", ErrInvalidKey, key)
	}
	return nil
}
