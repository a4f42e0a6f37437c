package pgcache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgcoord/pgcoord/internal/every"
	"github.com/pgcoord/pgcoord/internal/lockkey"
	"github.com/pgcoord/pgcoord/listen"
)

// Near-cache registry: invalidation follows the data.
//
// Every near cache registers its (app, prefix) in cache_entries, under a
// reserved prefix no cache can have (longer than any valid prefix), one row
// per Manager with a lease. A write through a cache without a near cache
// first takes a shared advisory transaction lock on (schema, app, prefix)
// and checks the registry in a statement of its own (a fresh snapshot),
// then writes, in one pipelined round trip and one implicit transaction;
// when a registration exists the check fails the batch, nothing is written,
// and the write is redone with an invalidation message (the path every near
// cache's own writes take). A registration takes the same lock exclusively:
// it waits for every write in flight that may have missed it, and every
// write after it sees it. A near cache therefore never reads a value that
// a later unpublished write could change.
//
// The lease is renewed every nearRenewEvery; a near cache serves nothing
// once its Manager's last successful renewal is older than
// nearLease-nearRenewEvery (its row may be gone), and after the Manager
// registered again it starts empty. Rows of a Manager that died expire and
// are deleted by the sweeper; until then writes to the prefix keep
// publishing, which is only a cost.
const (
	nearLease      = 2 * time.Minute
	nearRenewEvery = 30 * time.Second
	// nearHeldMemo is how long a cache that found its prefix registered
	// skips the check and publishes directly.
	nearHeldMemo = time.Minute
)

// nearRegistryPrefix is the prefix column of registry rows: 229 bytes, so
// no cache (prefixes are at most 200 bytes) can read or write them.
var nearRegistryPrefix = "pgcoord.pgcache.near-registry" + strings.Repeat("~", 200)

// errNearHeld is returned by a guarded write that found a near cache
// registration for its prefix: nothing was written.
var errNearHeld = errors.New("pgcache: a near cache holds this prefix")

// nearSQL holds the registry statements of one schema.
type nearSQL struct {
	lockShared, lockExclusive, guard, check, register, renew, unregister string
}

func newNearSQL(table string) nearSQL {
	exists := `EXISTS (SELECT 1 FROM ` + table + ` WHERE app = $1 AND prefix = $2 AND key >= $3 AND key < $4)`
	return nearSQL{
		lockShared:    `SELECT pg_advisory_xact_lock_shared($1)`,
		lockExclusive: `SELECT pg_advisory_xact_lock($1)`,
		// guard fails with division_by_zero (22012) when a registration
		// exists: the error ends the implicit transaction, so the write
		// queued after it in the same batch does not run.
		guard: `SELECT 1 / (NOT ` + exists + `)::int`,
		// check is the guard inside a caller's transaction, which must not
		// be aborted. A snapshot older than the statement (REPEATABLE READ,
		// SERIALIZABLE) may miss a registration: reported as unsure.
		check: `SELECT ` + exists + `, current_setting('transaction_isolation') <> 'read committed'`,
		register: `INSERT INTO ` + table + ` (app, prefix, key, kind, value, expires_at, written_at)
VALUES ($1, $2, $3, 0, convert_to($4::text, 'UTF8'), clock_timestamp() + $5::bigint * interval '1 microsecond', clock_timestamp())
ON CONFLICT (app, prefix, key) DO UPDATE SET expires_at = excluded.expires_at, written_at = excluded.written_at`,
		renew: `UPDATE ` + table + ` SET expires_at = clock_timestamp() + $4::bigint * interval '1 microsecond', written_at = clock_timestamp()
WHERE app = $1 AND prefix = $2 AND key = $3 AND expires_at > clock_timestamp()`,
		unregister: `DELETE FROM ` + table + ` WHERE app = $1 AND prefix = $2 AND key = ANY($3::text[])`,
	}
}

// nearKeyRange is the range of registry keys of prefix: "<len>:<prefix>:"
// followed by a Manager id, so one prefix's rows are one index range.
func nearKeyRange(prefix string) (lo, hi string) {
	lo = strconv.Itoa(len(prefix)) + ":" + prefix + ":"
	return lo, lo[:len(lo)-1] + ";"
}

// nearReg is this Manager's registration of one prefix.
type nearReg struct {
	prefix string
	key    string
	caches []*nearCache // guarded by Manager.nearMu
	// validUntil is when the near caches of the prefix stop serving
	// (monotonic nanoseconds, see Manager.mono) unless renewed.
	validUntil atomic.Int64
	// epoch changes when the registration lapsed and was made again: the
	// near caches flush before serving.
	epoch atomic.Uint64
}

func (r *nearReg) valid(now int64) bool { return now < r.validUntil.Load() }

// nearState is a Manager's near-cache registrations.
type nearState struct {
	id   string    // this Manager's id in registry keys
	base time.Time // origin of mono

	mu   sync.Mutex // guards regs, stop, done
	regs map[string]*nearReg
	stop context.CancelFunc
	done chan struct{}
}

func newNearState() *nearState {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &nearState{id: hex.EncodeToString(b[:]), base: time.Now(), regs: map[string]*nearReg{}}
}

// mono is a monotonic clock in nanoseconds.
func (m *Manager) mono() int64 { return int64(time.Since(m.near.base)) }

func (m *Manager) nearLockName(prefix string) int64 {
	return lockkey.Key(m.cfg.Schema, lockkey.CacheNear, m.cfg.AppName, prefix)
}

// registerNear registers n's prefix (the first near cache of a prefix on
// this Manager writes the row) and starts the renewal loop.
func (m *Manager) registerNear(ctx context.Context, n *nearCache) (*nearReg, error) {
	prefix := n.c.spec.prefix
	m.near.mu.Lock()
	if r, ok := m.near.regs[prefix]; ok {
		r.caches = append(r.caches, n)
		m.near.mu.Unlock()
		return r, nil
	}
	m.near.mu.Unlock()
	// Not under near.mu: registering may wait for writes in flight, and
	// writes on this Manager take near.mu (invalidateNear). CreateCache
	// runs under Manager.mu, so registrations do not race each other.
	lo, _ := nearKeyRange(prefix)
	r := &nearReg{prefix: prefix, key: lo + m.near.id, caches: []*nearCache{n}}
	if err := m.register(ctx, r); err != nil {
		return nil, fmt.Errorf("pgcache: near cache: register prefix %q: %w", prefix, err)
	}
	m.near.mu.Lock()
	defer m.near.mu.Unlock()
	m.near.regs[prefix] = r
	if m.near.stop == nil {
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		m.near.stop, m.near.done = cancel, make(chan struct{})
		go m.renewLoop(rctx, m.near.done)
	}
	return r, nil
}

// register writes r's row holding the prefix lock exclusively, so it waits
// for the writes in flight that did not see it.
func (m *Manager) register(ctx context.Context, r *nearReg) error {
	start := m.mono()
	err := pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, m.nsql.lockExclusive, m.nearLockName(r.prefix)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, m.nsql.register, m.cfg.AppName, nearRegistryPrefix, r.key,
			`{"prefix":`+strconv.Quote(r.prefix)+`}`, micros(nearLease))
		return err
	})
	if err != nil {
		return err
	}
	r.validUntil.Store(start + int64(nearLease-nearRenewEvery))
	return nil
}

// renewLoop extends this Manager's registrations until ctx ends.
func (m *Manager) renewLoop(ctx context.Context, done chan struct{}) {
	defer close(done)
	every.Run(ctx, nearRenewEvery, func(ctx context.Context) {
		for _, r := range m.nearRegs() {
			if err := m.renew(ctx, r); err != nil && ctx.Err() == nil {
				m.logger.WarnContext(ctx, "pgcache: near cache registration not renewed; its near caches stop serving when it lapses",
					slog.String("prefix", r.prefix), slog.Any("error", err))
			}
		}
	})
}

// nearRegs returns this Manager's registrations.
func (m *Manager) nearRegs() []*nearReg {
	m.near.mu.Lock()
	defer m.near.mu.Unlock()
	regs := make([]*nearReg, 0, len(m.near.regs))
	for _, r := range m.near.regs {
		regs = append(regs, r)
	}
	return regs
}

func (m *Manager) renew(ctx context.Context, r *nearReg) error {
	start := m.mono()
	tag, err := m.pool.Exec(ctx, m.nsql.renew, m.cfg.AppName, nearRegistryPrefix, r.key, micros(nearLease))
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 1 {
		r.validUntil.Store(start + int64(nearLease-nearRenewEvery))
		return nil
	}
	// The row lapsed: writes may have gone unpublished since. Register
	// again; the near caches flush before serving.
	m.logger.WarnContext(ctx, "pgcache: near cache registration had lapsed; registering again and flushing", slog.String("prefix", r.prefix))
	r.epoch.Add(1)
	return m.register(ctx, r)
}

// closeNear stops the renewals and deletes this Manager's registrations.
func (m *Manager) closeNear(ctx context.Context) {
	m.near.mu.Lock()
	stop, done := m.near.stop, m.near.done
	keys := make([]string, 0, len(m.near.regs))
	for _, r := range m.near.regs {
		keys = append(keys, r.key)
	}
	m.near.mu.Unlock()
	if stop == nil {
		return
	}
	stop()
	<-done
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), wrapLockTimeout)
	defer cancel()
	if _, err := m.pool.Exec(dctx, m.nsql.unregister, m.cfg.AppName, nearRegistryPrefix, keys); err != nil {
		m.logger.WarnContext(ctx, "pgcache: near cache registrations not deleted; they expire", slog.Any("error", err))
	}
}

// nearCachesOf returns this Manager's near caches of prefix.
func (m *Manager) nearCachesOf(prefix string) []*nearCache {
	m.near.mu.Lock()
	defer m.near.mu.Unlock()
	if r, ok := m.near.regs[prefix]; ok {
		return append([]*nearCache(nil), r.caches...)
	}
	return nil
}

// invalidateNear drops keys (or everything) from this Manager's near caches
// of prefix.
func (m *Manager) invalidateNear(prefix string, keys []string, reset bool) {
	for _, n := range m.nearCachesOf(prefix) {
		n.invalidate(keys, reset)
	}
}

// nearGuard is the querier of a write through a cache without a near
// cache: each statement runs after the shared prefix lock and the registry
// guard, in one batch (one round trip, one implicit transaction). A
// registration makes it return errNearHeld with nothing written.
type nearGuard struct {
	m      *Manager
	prefix string
}

func (g nearGuard) batch(sql string, args []any) *pgx.Batch {
	lo, hi := nearKeyRange(g.prefix)
	b := &pgx.Batch{}
	b.Queue(g.m.nsql.lockShared, g.m.nearLockName(g.prefix))
	b.Queue(g.m.nsql.guard, g.m.cfg.AppName, nearRegistryPrefix, lo, hi)
	b.Queue(sql, args...)
	return b
}

// send sends the batch and consumes the lock and guard results.
func (g nearGuard) send(ctx context.Context, sql string, args []any) (pgx.BatchResults, error) {
	br := g.m.pool.SendBatch(ctx, g.batch(sql, args))
	_, err := br.Exec()
	if err == nil {
		_, err = br.Exec()
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "22012" {
			err = errNearHeld
		}
	}
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	return br, nil
}

func (g nearGuard) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	br, err := g.send(ctx, sql, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

func (g nearGuard) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	br, err := g.send(ctx, sql, args)
	if err != nil {
		return errRow{err}
	}
	return batchRow{row: br.QueryRow(), br: br}
}

func (g nearGuard) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	br, err := g.send(ctx, sql, args)
	if err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	return &batchRows{Rows: rows, br: br}, nil
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

type batchRow struct {
	row pgx.Row
	br  pgx.BatchResults
}

func (r batchRow) Scan(dest ...any) error {
	err := r.row.Scan(dest...)
	if cerr := r.br.Close(); err == nil {
		err = cerr
	}
	return err
}

type batchRows struct {
	pgx.Rows
	br pgx.BatchResults
}

func (r *batchRows) Close() {
	r.Rows.Close()
	_ = r.br.Close()
}

// checkNearTx takes the shared prefix lock inside the caller's transaction
// (held until it ends) and reports whether a near cache may hold prefix.
func (m *Manager) checkNearTx(ctx context.Context, tx pgx.Tx, prefix string) (bool, error) {
	lo, hi := nearKeyRange(prefix)
	b := &pgx.Batch{}
	b.Queue(m.nsql.lockShared, m.nearLockName(prefix))
	b.Queue(m.nsql.check, m.cfg.AppName, nearRegistryPrefix, lo, hi)
	br := tx.SendBatch(ctx, b)
	var held, unsure bool
	_, err := br.Exec()
	if err == nil {
		err = br.QueryRow().Scan(&held, &unsure)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, err
	}
	// Unsure (an old snapshot) counts as held when this Manager can publish.
	return held || (unsure && m.cfg.PubSub != nil), nil
}

// publishNear publishes the invalidation of keys (or of the whole prefix)
// in tx, to every instance including this one: other Managers sharing this
// PubSub may hold near caches of the prefix.
//
// selfDone says this Manager invalidates its own near caches after the
// commit itself (write, a *txhooks.Tx): they then skip the message.
func (m *Manager) publishNear(ctx context.Context, tx pgx.Tx, prefix string, keys []string, reset, selfDone bool) error {
	ps := m.cfg.PubSub
	if ps == nil {
		return m.errNoPubSub(prefix)
	}
	msg := nearMessage{Keys: keys, Reset: reset}
	if reset {
		msg.Keys = nil
	}
	if selfDone {
		msg.Origin = m.near.id
	}
	channel := nearChannel(m.cfg.AppName, prefix)
	opts := &listen.PublishOpts{IncludeSelf: true}
	err := ps.PublishTx(ctx, tx, channel, msg, opts)
	if errors.Is(err, listen.ErrPayloadTooLarge) {
		// Too many keys for one message: every instance flushes instead.
		err = ps.PublishTx(ctx, tx, channel, nearMessage{Reset: true, Origin: msg.Origin}, opts)
	}
	if err != nil {
		return fmt.Errorf("publish near-cache invalidation: %w", err)
	}
	return nil
}

// errNoPubSub is the error of a write to a prefix some near cache holds
// through a Manager that cannot invalidate it.
func (m *Manager) errNoPubSub(prefix string) error {
	return fmt.Errorf("%w: a near cache holds prefix %q, and only a Manager with a PubSub can invalidate it", ErrNearCacheNeedsPubSub, prefix)
}
