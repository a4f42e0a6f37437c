package pgcache

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/pgcoord/pgcoord/internal/lifecycle"
)

var (
	// ErrClosed is returned by every call on a [Manager], or on a [Cache] or
	// [Counter] of it, after [Manager.Close].
	// It Is the ErrClosed of every pgcoord package (app.ErrClosed).
	ErrClosed = lifecycle.Closed("pgcache: manager closed")

	// ErrAlreadyStarted is returned by [Manager.Start] when called a second
	// time. It Is the ErrAlreadyStarted of every pgcoord package.
	ErrAlreadyStarted = lifecycle.AlreadyStarted("pgcache: already started")

	// ErrEmptyKey is returned when a key is the empty string.
	ErrEmptyKey = errors.New("pgcache: empty key")

	// ErrInvalidKey is returned (wrapped) for a key that is not valid UTF-8,
	// contains a NUL byte or is longer than [MaxKeyBytes].
	ErrInvalidKey = errors.New("pgcache: invalid key")

	// ErrNotCacheable is returned (wrapped) when a value cannot be stored: it
	// encodes to JSON null (NocoBase's Redis rule: null is not cacheable), or
	// JSON encoding fails. Nothing is written.
	ErrNotCacheable = errors.New("pgcache: value is not cacheable")

	// ErrValueTooLarge is returned (wrapped) when an encoded value is larger
	// than [CacheConfig.MaxValueBytes]. Nothing is written.
	ErrValueTooLarge = errors.New("pgcache: value too large")

	// ErrNotObject is returned (wrapped) by [Cache.SetValueInObject] and
	// [Cache.DelValueInObject] when the stored value is not a JSON object.
	// Nothing is written.
	ErrNotObject = errors.New("pgcache: stored value is not a JSON object")

	// ErrNotInteger is returned (wrapped) by [Counter] calls when the stored
	// value is not a JSON integer that fits an int64.
	ErrNotInteger = errors.New("pgcache: stored value is not an integer")

	// ErrUnknownStore is returned (wrapped) when a store name is neither
	// [StorePostgres] nor [StoreMemory].
	ErrUnknownStore = errors.New("pgcache: unknown store")

	// ErrCacheExists is returned (wrapped) by [Manager.CreateCache] when a
	// cache of that name exists with a different configuration. The live
	// cache is never replaced.
	ErrCacheExists = errors.New("pgcache: cache exists with a different configuration")

	// ErrTxUnsupported is returned by SetTx/DelTx on a memory-store cache when
	// the transaction is not a *txhooks.Tx: the memory store can only apply a
	// transactional write from an after-commit hook.
	ErrTxUnsupported = errors.New("pgcache: memory store needs a *txhooks.Tx for transactional writes")

	// ErrNearCacheNeedsPubSub is returned by [Manager.CreateCache] when a near
	// cache is asked for and [ManagerConfig.PubSub] is nil, and wrapped by a
	// write, through a Manager without a PubSub, to a prefix that a near
	// cache holds on some instance (nothing is written: the near caches could
	// not be invalidated).
	ErrNearCacheNeedsPubSub = errors.New("pgcache: near cache needs ManagerConfig.PubSub")
)

// CacheNotFoundError is returned by [Manager.Cache] for a name that was never
// created on this manager.
type CacheNotFoundError struct {
	// Name is the name asked for.
	Name string
}

// Error implements error.
func (e *CacheNotFoundError) Error() string {
	return fmt.Sprintf("pgcache: cache %q not found", e.Name)
}

// opError is the error of one operation on one key (or cache, or pattern):
// "pgcache: set "k": <cause>", said once even when the cause is one of this
// package's errors, which begin with "pgcache: " themselves.
type opError struct {
	op, name string
	err      error
}

// opErr wraps err as the failure of op on name; errors.Is and errors.As see
// err.
func opErr(op, name string, err error) error { return &opError{op: op, name: name, err: err} }

func (e *opError) Error() string {
	return "pgcache: " + e.op + " " + strconv.Quote(e.name) + ": " + strings.TrimPrefix(e.err.Error(), "pgcache: ")
}

func (e *opError) Unwrap() error { return e.err }
