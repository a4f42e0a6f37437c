package pgcache

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// ClusterSingleFlight locking.
//
// The per-key guard of a ClusterSingleFlight Wrap is a session advisory lock
// taken on a connection of the Manager's own, outside the pool: a Wrap holds
// no pool connection while its loader runs, so loaders that read through the
// same pool (the normal case) never wait for connections held by Wraps. Only
// non-blocking statements run on that connection (pg_try_advisory_lock,
// pg_advisory_unlock), serialised by a mutex; a Wrap that finds the key held
// elsewhere polls, with backoff, for the value or the lock.
const (
	// wrapPollMin and wrapPollMax bound the interval at which a Wrap waiting
	// for another holder's loader checks for the stored value and the lock.
	wrapPollMin = 5 * time.Millisecond
	wrapPollMax = 100 * time.Millisecond
	// wrapLockTimeout bounds one statement on the lock connection. Statements
	// never use the caller's context: cancelling one would close the
	// connection and release every other Wrap's lock.
	wrapLockTimeout = 10 * time.Second
)

// wrapLocks is the lock connection of one Manager and the keys it holds.
type wrapLocks struct {
	connConfig *pgx.ConnConfig
	logger     *slog.Logger

	mu     sync.Mutex         // guards everything below; held while a statement runs on conn
	conn   *pgx.Conn          // nil until first use, after a failure and after close
	gen    uint64             // bumped whenever conn is dropped: its locks are gone
	held   map[int64]struct{} // the lockkey keys this Manager holds
	closed bool
}

func newWrapLocks(cfg *pgx.ConnConfig, logger *slog.Logger) *wrapLocks {
	return &wrapLocks{connConfig: cfg, logger: logger, held: map[int64]struct{}{}}
}

// stmtCtx is the context of one statement on the lock connection.
func stmtCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), wrapLockTimeout)
}

// dropLocked closes the connection after a failure: its session, and so
// every lock it held, is gone. w.mu is held.
func (w *wrapLocks) dropLocked(ctx context.Context) {
	if w.conn != nil {
		cctx, cancel := stmtCtx(ctx)
		_ = w.conn.Close(cctx)
		cancel()
	}
	w.conn = nil
	w.gen++
}

// tryLock takes the lock name unless another Wrap of this Manager or any
// other session holds it. gen identifies the connection that holds it.
func (w *wrapLocks) tryLock(ctx context.Context, name int64) (got bool, gen uint64, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false, 0, ErrClosed
	}
	// Session advisory locks are reentrant: a second Wrap of this Manager on
	// the same key (another cache with the same prefix) must wait here.
	if _, ok := w.held[name]; ok {
		return false, 0, nil
	}
	sctx, cancel := stmtCtx(ctx)
	defer cancel()
	if w.conn == nil || w.conn.IsClosed() {
		if w.conn != nil {
			w.dropLocked(ctx)
		}
		conn, err := pgx.ConnectConfig(sctx, w.connConfig)
		if err != nil {
			return false, 0, fmt.Errorf("connect the cluster single-flight lock connection: %w", err)
		}
		w.conn = conn
	}
	if err := w.conn.QueryRow(sctx, `SELECT pg_try_advisory_lock($1)`, name).Scan(&got); err != nil {
		w.dropLocked(ctx)
		return false, 0, fmt.Errorf("cluster single-flight lock: %w", err)
	}
	if got {
		w.held[name] = struct{}{}
	}
	return got, w.gen, nil
}

// unlock releases name taken at gen. It reports false when the lock had been
// lost with its connection before (another instance may have loaded the key
// meanwhile).
func (w *wrapLocks) unlock(ctx context.Context, name int64, gen uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.held, name)
	if w.closed || w.conn == nil || gen != w.gen {
		return w.closed
	}
	sctx, cancel := stmtCtx(ctx)
	defer cancel()
	var released bool
	if err := w.conn.QueryRow(sctx, `SELECT pg_advisory_unlock($1)`, name).Scan(&released); err != nil {
		// The session may still hold the lock: end it.
		w.logger.WarnContext(ctx, "pgcache: cluster single-flight unlock failed; closing the lock connection", slog.Any("error", err))
		w.dropLocked(ctx)
		return true
	}
	return released
}

// close ends the lock connection, releasing every lock it holds.
func (w *wrapLocks) close(ctx context.Context) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.conn != nil {
		w.dropLocked(ctx)
	}
}
