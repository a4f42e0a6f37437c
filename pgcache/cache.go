package pgcache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/singleflight"

	"github.com/pgcoord/pgcoord/txhooks"
)

// NoExpiry, passed as a TTL, stores an entry without expiry even when the
// cache has a default TTL; returned by [Cache.TTL], it means the entry has no
// expiry.
const NoExpiry = time.Duration(-1)

// DefaultMaxValueBytes is the largest encoded value a cache accepts when
// CacheConfig.MaxValueBytes is zero.
const DefaultMaxValueBytes = 16 << 20

// CacheConfig configures one cache.
type CacheConfig struct {
	// Name identifies the cache on its Manager. Required.
	Name string
	// Prefix namespaces the cache's keys inside the app: keys are
	// "app:prefix:key". Caches with different prefixes never see each
	// other's keys. Defaults to Name.
	Prefix string
	// Store is StorePostgres or StoreMemory. Defaults to
	// ManagerConfig.DefaultStore.
	Store string
	// TTL is the expiry of values set without one. Defaults to 0: no expiry.
	TTL time.Duration
	// MaxEntries bounds the cache. Memory store: the LRU size, held when
	// every write returns (the least recently used entries are evicted
	// first), defaults to DefaultMemoryMaxEntries. Postgres store: 0 (the default) means
	// unbounded; otherwise the sweeper deletes the oldest-written entries
	// beyond it in bounded batches, so the bound may be exceeded between sweeps.
	MaxEntries int
	// NearCache puts an in-process LRU in front of the postgres store,
	// invalidated on every instance by every write through any cache of its
	// prefix (see the package documentation). Needs ManagerConfig.PubSub.
	NearCache bool
	// NearMaxEntries bounds the near cache. Defaults to DefaultNearMaxEntries.
	NearMaxEntries int
	// NearTTL bounds how long an entry is served from memory, on top of its
	// own expiry. Defaults to 0: only the entry's expiry and invalidations
	// end it.
	NearTTL time.Duration
	// ClusterSingleFlight makes Wrap run a key's loader once across every
	// instance at a time (a PostgreSQL session advisory lock per key, held
	// on a connection of the Manager outside the pool), not only once per
	// instance. Postgres store only.
	ClusterSingleFlight bool
	// MaxValueBytes bounds an encoded value. Defaults to DefaultMaxValueBytes.
	MaxValueBytes int
}

// DefaultNearMaxEntries bounds a near cache when CacheConfig.NearMaxEntries is zero.
const DefaultNearMaxEntries = 10000

// cacheSpec is a validated CacheConfig with defaults filled; comparable, so
// CreateCache can tell whether a second creation asks for the same cache.
type cacheSpec struct {
	name, prefix, store string
	ttl                 time.Duration
	maxEntries          int
	near                bool
	nearMax             int
	nearTTL             time.Duration
	clusterSF           bool
	maxValueBytes       int
}

func (c CacheConfig) spec(defaultStore string) (cacheSpec, error) {
	s := cacheSpec{
		name: c.Name, prefix: c.Prefix, store: c.Store, ttl: c.TTL, maxEntries: c.MaxEntries,
		clusterSF: c.ClusterSingleFlight, maxValueBytes: c.MaxValueBytes,
	}
	if s.name == "" {
		return s, fmt.Errorf("CacheConfig.Name: required")
	}
	if err := validateName(s.name); err != nil {
		return s, fmt.Errorf("CacheConfig.Name: %w", err)
	}
	if s.prefix == "" {
		s.prefix = s.name
	}
	if err := validateName(s.prefix); err != nil {
		return s, fmt.Errorf("CacheConfig.Prefix: %w", err)
	}
	if s.store == "" {
		s.store = defaultStore
	}
	if s.store != StorePostgres && s.store != StoreMemory {
		return s, fmt.Errorf("CacheConfig.Store: %w: %q", ErrUnknownStore, s.store)
	}
	if s.ttl < 0 {
		return s, fmt.Errorf("CacheConfig.TTL: must not be negative, got %s", s.ttl)
	}
	if s.maxEntries < 0 {
		return s, fmt.Errorf("CacheConfig.MaxEntries: must not be negative, got %d", s.maxEntries)
	}
	if s.maxEntries == 0 && s.store == StoreMemory {
		s.maxEntries = DefaultMemoryMaxEntries
	}
	if s.maxValueBytes < 0 {
		return s, fmt.Errorf("CacheConfig.MaxValueBytes: must not be negative, got %d", s.maxValueBytes)
	}
	if s.maxValueBytes == 0 {
		s.maxValueBytes = DefaultMaxValueBytes
	}
	switch {
	case c.NearMaxEntries < 0:
		return s, fmt.Errorf("CacheConfig.NearMaxEntries: must not be negative, got %d", c.NearMaxEntries)
	case c.NearTTL < 0:
		return s, fmt.Errorf("CacheConfig.NearTTL: must not be negative, got %s", c.NearTTL)
	case !c.NearCache && (c.NearMaxEntries != 0 || c.NearTTL != 0):
		return s, fmt.Errorf("CacheConfig.NearMaxEntries, NearTTL: need NearCache")
	}
	if c.NearCache {
		if s.store != StorePostgres {
			return s, fmt.Errorf("CacheConfig.NearCache: needs the postgres store, not %q", s.store)
		}
		s.near, s.nearMax, s.nearTTL = true, c.NearMaxEntries, c.NearTTL
		if s.nearMax == 0 {
			s.nearMax = DefaultNearMaxEntries
		}
	}
	if s.clusterSF && s.store != StorePostgres {
		return s, fmt.Errorf("CacheConfig.ClusterSingleFlight: needs the postgres store, not %q", s.store)
	}
	return s, nil
}

// Cache is one named cache. Its methods are safe for concurrent use. Values
// are stored as JSON (encoding/json), except []byte, which is stored as it
// is. A value that encodes to JSON null is not cacheable.
type Cache struct {
	m     *Manager
	spec  cacheSpec
	st    store
	pg    *pgStore     // nil for the memory store
	reads *readBatcher // the postgres store's point reads (coalesce.go); nil for the memory store
	mem   *memStore    // nil for the postgres store
	near  *nearCache
	sf    singleflight.Group
	stats stats
	// attrs are the cache's attribute sets for its instruments (telemetry.go).
	attrs  *cacheAttrs
	logger *slog.Logger
	// heldUntil (Manager.mono) is set when a write found a near cache
	// registered for this prefix; see prefixHeld.
	heldUntil atomic.Int64
}

func newCache(ctx context.Context, m *Manager, spec cacheSpec) (*Cache, error) {
	c := &Cache{m: m, spec: spec, attrs: newCacheAttrs(spec), logger: m.logger.With(slog.String("cache", spec.name))}
	switch spec.store {
	case StorePostgres:
		c.pg = &pgStore{db: m.pool, sql: m.sql, app: m.cfg.AppName, prefix: spec.prefix}
		c.st = c.pg
		c.reads = &readBatcher{s: c.pg, withTTL: spec.near, lanes: max(1, int(m.pool.Config().MaxConns))}
	case StoreMemory:
		c.mem = newMemStore(spec.maxEntries, &c.stats.evictions)
		c.st = c.mem
	}
	if spec.near {
		n, err := newNearCache(ctx, c)
		if err != nil {
			return nil, err
		}
		c.near = n
	}
	return c, nil
}

func (c *Cache) close() {
	if c.near != nil {
		c.near.close()
	}
}

// Name is the cache's name.
func (c *Cache) Name() string { return c.spec.name }

// Prefix is the cache's key prefix inside its app.
func (c *Cache) Prefix() string { return c.spec.prefix }

// Store is the cache's store name.
func (c *Cache) Store() string { return c.spec.store }

// Key returns the full name of key, "app:prefix:key", as NocoBase's Cache.key
// does; the cache's methods take the short key.
func (c *Cache) Key(key string) string {
	return c.m.cfg.AppName + ":" + c.spec.prefix + ":" + key
}

// Stats returns this cache's counters.
func (c *Cache) Stats() Stats { return c.stats.snapshot() }

// check is run first by every call: closed manager, cancelled context.
func (c *Cache) check(ctx context.Context) error {
	if c.m.life.Stopped() {
		return ErrClosed
	}
	return ctx.Err()
}

// checkKeys is check, then validateKey of each key: the opening of every
// call that takes keys.
func (c *Cache) checkKeys(ctx context.Context, keys ...string) error {
	if err := c.check(ctx); err != nil {
		return err
	}
	for _, k := range keys {
		if err := validateKey(k); err != nil {
			return err
		}
	}
	return nil
}

// ttlFor resolves a per-call TTL: 0 is the cache default, negative is none.
func (c *Cache) ttlFor(ttl time.Duration) time.Duration {
	switch {
	case ttl == 0:
		return c.spec.ttl
	case ttl < 0:
		return 0
	}
	return ttl
}

func (c *Cache) encode(v any) (encoded, error) {
	e, err := encode(v, c.spec.maxValueBytes)
	if err == nil && c.mem != nil {
		// The memory store keeps the bytes: never alias the caller's slice.
		e.raw = append([]byte(nil), e.raw...)
	}
	return e, err
}

// getEncoded reads one entry, through the near cache when there is one.
func (c *Cache) getEncoded(ctx context.Context, key string) (encoded, bool, error) {
	defer c.opEnd(ctx, c.opStart(ctx), c.attrs.get)
	if c.near != nil {
		return c.near.get(ctx, key)
	}
	var (
		e   encoded
		ok  bool
		err error
	)
	if c.reads != nil {
		r := c.reads.get(ctx, key)
		e, ok, err = r.e, r.ok, r.err
	} else {
		e, _, ok, err = c.st.get(ctx, key)
	}
	if err != nil {
		return encoded{}, false, opErr("get", key, err)
	}
	c.count(ok)
	return e, ok, nil
}

func (c *Cache) count(hit bool) {
	if hit {
		c.stats.hits.Add(1)
	} else {
		c.stats.misses.Add(1)
	}
}

// Get returns the value of key decoded into an any (JSON objects as
// map[string]any, numbers as float64, []byte values as []byte), and whether
// it was found. An expired entry is never returned. Use the generic [Get]
// for a typed value.
func (c *Cache) Get(ctx context.Context, key string) (any, bool, error) {
	if err := c.checkKeys(ctx, key); err != nil {
		return nil, false, err
	}
	e, ok, err := c.getEncoded(ctx, key)
	if err != nil || !ok {
		return nil, false, err
	}
	v, err := decodeAny(e.raw, e.kind)
	return v, err == nil, err
}

// GetInto decodes the value of key into dst, a non-nil pointer, and reports
// whether it was found. *[]byte receives the stored bytes as they are.
func (c *Cache) GetInto(ctx context.Context, key string, dst any) (bool, error) {
	if err := c.checkKeys(ctx, key); err != nil {
		return false, err
	}
	e, ok, err := c.getEncoded(ctx, key)
	if err != nil || !ok {
		return false, err
	}
	if err := decodeInto(e.raw, e.kind, dst); err != nil {
		return false, err
	}
	return true, nil
}

// Set stores value under key. ttl 0 uses the cache's TTL, NoExpiry (any
// negative value) stores it without expiry. A value that cannot be encoded
// (or encodes to null, or is larger than MaxValueBytes) returns an error and
// writes nothing.
func (c *Cache) Set(ctx context.Context, key string, value any, ttl time.Duration) error {
	if err := c.checkKeys(ctx, key); err != nil {
		return err
	}
	e, err := c.encode(value)
	if err != nil {
		return opErr("set", key, err)
	}
	if err := c.write(ctx, []string{key}, false, func(ctx context.Context, q querier) error {
		return c.st.set(ctx, q, key, e, c.ttlFor(ttl))
	}); err != nil {
		return opErr("set", key, err)
	}
	c.stats.sets.Add(1)
	c.logDebug(ctx, "pgcache: set", key, len(e.raw))
	return nil
}

// SetTx stores value under key inside tx. On PostgreSQL the row is written by
// tx: other sessions see it if and only if tx commits, after the commit. Near
// caches of every instance are invalidated after the commit (the
// invalidation is published inside tx). On the memory store tx must be a
// *txhooks.Tx: the value is stored by its after-commit hook, and never on
// rollback.
func (c *Cache) SetTx(ctx context.Context, tx pgx.Tx, key string, value any, ttl time.Duration) error {
	if err := c.checkKeys(ctx, key); err != nil {
		return err
	}
	e, err := c.encode(value)
	if err != nil {
		return opErr("set", key, err)
	}
	if err := c.writeTx(ctx, tx, []string{key}, false, func(ctx context.Context, q querier) error {
		return c.st.set(ctx, q, key, e, c.ttlFor(ttl))
	}); err != nil {
		return opErr("set", key, err)
	}
	c.stats.sets.Add(1)
	return nil
}

// Del deletes key. Deleting a missing key is not an error.
func (c *Cache) Del(ctx context.Context, key string) error {
	if err := c.checkKeys(ctx, key); err != nil {
		return err
	}
	keys := []string{key}
	if err := c.write(ctx, keys, false, func(ctx context.Context, q querier) error {
		return c.st.del(ctx, q, keys)
	}); err != nil {
		return opErr("del", key, err)
	}
	c.stats.deletes.Add(1)
	return nil
}

// DelTx deletes key inside tx, with the commit and rollback rules of SetTx.
func (c *Cache) DelTx(ctx context.Context, tx pgx.Tx, key string) error {
	if err := c.checkKeys(ctx, key); err != nil {
		return err
	}
	keys := []string{key}
	if err := c.writeTx(ctx, tx, keys, false, func(ctx context.Context, q querier) error {
		return c.st.del(ctx, q, keys)
	}); err != nil {
		return opErr("del", key, err)
	}
	c.stats.deletes.Add(1)
	return nil
}

// Reset deletes every entry of this cache, and only of this cache: other
// caches and other apps sharing the database keep theirs (NocoBase's Redis
// store ran FLUSHDB). Caches created with the same app and prefix are the
// same entries and are cleared too.
func (c *Cache) Reset(ctx context.Context) error {
	if err := c.check(ctx); err != nil {
		return err
	}
	if err := c.write(ctx, nil, true, func(ctx context.Context, q querier) error {
		return c.st.reset(ctx, q)
	}); err != nil {
		return opErr("reset", c.spec.name, err)
	}
	c.stats.resets.Add(1)
	return nil
}

// Item is one key and value for MSet.
type Item struct {
	// Key is the short key (without "app:prefix:").
	Key string
	// Value is stored as Set stores it.
	Value any
}

// MSet stores every item in one statement (one round trip) with one TTL (0:
// the cache's TTL, NoExpiry: none). When a key appears twice the last value
// wins. If any value cannot be encoded nothing is written.
func (c *Cache) MSet(ctx context.Context, items []Item, ttl time.Duration) error {
	if err := c.check(ctx); err != nil {
		return err
	}
	if len(items) == 0 {
		return nil
	}
	idx := make(map[string]int, len(items))
	keys := make([]string, 0, len(items))
	vals := make([]encoded, 0, len(items))
	for _, it := range items {
		if err := validateKey(it.Key); err != nil {
			return err
		}
		e, err := c.encode(it.Value)
		if err != nil {
			return opErr("mset", it.Key, err)
		}
		if i, ok := idx[it.Key]; ok {
			vals[i] = e
			continue
		}
		idx[it.Key] = len(keys)
		keys = append(keys, it.Key)
		vals = append(vals, e)
	}
	if err := c.write(ctx, keys, false, func(ctx context.Context, q querier) error {
		return c.st.mset(ctx, q, keys, vals, c.ttlFor(ttl))
	}); err != nil {
		return fmt.Errorf("pgcache: mset: %w", err)
	}
	c.stats.sets.Add(uint64(len(keys)))
	return nil
}

// MGet returns the values of keys in one round trip, positionally, with nil
// for a missing or expired key (a stored value is never nil: null is not
// cacheable). Values decode as in Get; see the generic [MGet] for types.
func (c *Cache) MGet(ctx context.Context, keys ...string) ([]any, error) {
	out := make([]any, len(keys))
	err := c.mgetEach(ctx, keys, func(i int, e encoded) (err error) {
		out[i], err = decodeAny(e.raw, e.kind)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// mgetEach reads keys in one round trip and calls decode with the position
// and stored value of every key found. On the postgres store without a near
// cache e.raw points into pgx's row buffer (valid only during the call): a
// typed MGet decodes each value straight from it. decode's error is
// returned as it is.
func (c *Cache) mgetEach(ctx context.Context, keys []string, decode func(i int, e encoded) error) error {
	if err := c.checkKeys(ctx, keys...); err != nil {
		return err
	}
	if len(keys) == 0 {
		return nil
	}
	defer c.opEnd(ctx, c.opStart(ctx), c.attrs.mget)
	if c.near == nil && c.pg != nil {
		var hits int
		var decodeErr error
		err := c.pg.eachEntry(ctx, c.pg.sql.mget, keys, func(i int, e encoded, _ int64) error {
			hits++
			decodeErr = decode(i, e)
			return decodeErr
		})
		c.stats.hits.Add(uint64(hits))
		c.stats.misses.Add(uint64(len(keys) - hits))
		switch {
		case decodeErr != nil:
			return decodeErr
		case err != nil:
			return fmt.Errorf("pgcache: mget: %w", err)
		}
		return nil
	}
	var (
		vals  []encoded
		found []bool
		err   error
	)
	if c.near != nil {
		vals, found, err = c.near.mget(ctx, keys)
	} else if vals, found, err = c.st.mget(ctx, keys); err != nil {
		err = fmt.Errorf("pgcache: mget: %w", err)
	} else {
		for _, f := range found {
			c.count(f)
		}
	}
	if err != nil {
		return err
	}
	for i, f := range found {
		if f {
			if err := decode(i, vals[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// MDel deletes keys in one statement.
func (c *Cache) MDel(ctx context.Context, keys ...string) error {
	if err := c.checkKeys(ctx, keys...); err != nil {
		return err
	}
	if len(keys) == 0 {
		return nil
	}
	if err := c.write(ctx, keys, false, func(ctx context.Context, q querier) error {
		return c.st.del(ctx, q, keys)
	}); err != nil {
		return fmt.Errorf("pgcache: mdel: %w", err)
	}
	c.stats.deletes.Add(uint64(len(keys)))
	return nil
}

// Keys returns this cache's live keys (short form, without "app:prefix:")
// matching a glob pattern, sorted. '*' matches any run of characters, '?'
// one character, '\' escapes the next character; '%' and '_' match
// themselves. An empty pattern matches every key. Other caches' keys are
// never returned (NocoBase's Redis store returned the whole database's).
// A pattern with a NUL byte or invalid UTF-8 returns an error wrapping
// ErrInvalidKey.
func (c *Cache) Keys(ctx context.Context, pattern string) ([]string, error) {
	if err := c.check(ctx); err != nil {
		return nil, err
	}
	if err := validatePattern(pattern); err != nil {
		return nil, err
	}
	keys, err := c.st.keys(ctx, pattern)
	if err != nil {
		return nil, opErr("keys", pattern, err)
	}
	if keys == nil {
		keys = []string{}
	}
	return keys, nil
}

// TTL returns the remaining lifetime of key by the database clock (by this
// process's clock for the memory store), NoExpiry when it has none, and
// whether key is there: a missing or expired key is (0, false, nil), as Get
// reports a miss.
func (c *Cache) TTL(ctx context.Context, key string) (time.Duration, bool, error) {
	if err := c.checkKeys(ctx, key); err != nil {
		return 0, false, err
	}
	d, ok, err := c.st.ttl(ctx, key)
	if err != nil {
		return 0, false, opErr("ttl", key, err)
	}
	return d, ok, nil
}

// GetValueInObject returns field of the JSON object stored under key (decoded
// as in Get) and whether it was there. A missing key reads as an empty
// object. See the generic [GetValueInObject] for a typed value.
func (c *Cache) GetValueInObject(ctx context.Context, key, field string) (any, bool, error) {
	var v any
	ok, err := c.getField(ctx, key, field, &v)
	return v, ok, err
}

// getField decodes field of the object stored under key into dst.
func (c *Cache) getField(ctx context.Context, key, field string, dst any) (bool, error) {
	if err := c.checkKeys(ctx, key); err != nil {
		return false, err
	}
	e, ok, err := c.getEncoded(ctx, key)
	if err != nil || !ok {
		return false, err
	}
	if e.kind != kindJSON {
		return false, fmt.Errorf("%w: %q holds raw bytes", ErrNotObject, key)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(e.raw, &obj); err != nil || obj == nil {
		return false, fmt.Errorf("%w: %q", ErrNotObject, key)
	}
	raw, ok := obj[field]
	if !ok {
		return false, nil
	}
	if err := decodeInto(raw, kindJSON, dst); err != nil {
		return false, err
	}
	return true, nil
}

// SetValueInObject sets field of the JSON object stored under key to value,
// atomically (one SQL statement: concurrent writers of other fields are never
// lost). A missing or expired key starts from an empty object with the
// cache's TTL; an existing entry keeps its expiry. A stored value that is not
// an object returns an error wrapping ErrNotObject and is left alone.
func (c *Cache) SetValueInObject(ctx context.Context, key, field string, value any) error {
	if err := c.checkKeys(ctx, key); err != nil {
		return err
	}
	e, err := encode(value, c.spec.maxValueBytes)
	if err != nil {
		return fmt.Errorf("pgcache: set %q.%q: %w", key, field, err)
	}
	if err := c.write(ctx, []string{key}, false, func(ctx context.Context, q querier) error {
		return c.st.objSet(ctx, q, key, field, e, c.spec.ttl)
	}); err != nil {
		return fmt.Errorf("pgcache: set %q.%q: %w", key, field, err)
	}
	c.stats.sets.Add(1)
	return nil
}

// DelValueInObject removes field from the JSON object stored under key,
// atomically and keeping the entry's expiry. A missing key is not an error.
func (c *Cache) DelValueInObject(ctx context.Context, key, field string) error {
	if err := c.checkKeys(ctx, key); err != nil {
		return err
	}
	if err := c.write(ctx, []string{key}, false, func(ctx context.Context, q querier) error {
		return c.st.objDel(ctx, q, key, field)
	}); err != nil {
		return fmt.Errorf("pgcache: del %q.%q: %w", key, field, err)
	}
	return nil
}

// write runs a write outside any caller transaction.
//
// Invalidation follows the data: when a near cache anywhere may hold this
// cache's prefix (this cache has one, or the registry says so, see
// near_registry.go), the write and the publication of its invalidation
// commit together in one transaction (one pipelined round trip when the
// write needs no results, see near_pipe.go), and this Manager's near caches of the
// prefix are invalidated before and after, so a reader on this instance
// never sees the old value once write returns. Otherwise fn runs guarded:
// one round trip that writes only if no near cache registered the prefix.
func (c *Cache) write(ctx context.Context, keys []string, reset bool, fn func(ctx context.Context, q querier) error) error {
	attrs := c.attrs.write
	if reset {
		attrs = c.attrs.reset
	}
	defer c.opEnd(ctx, c.opStart(ctx), attrs)
	if c.pg == nil {
		return fn(ctx, nil)
	}
	if c.near == nil && !c.prefixHeld() {
		err := fn(ctx, nearGuard{m: c.m, prefix: c.spec.prefix})
		if !errors.Is(err, errNearHeld) {
			return err
		}
		c.markPrefixHeld()
	}
	if c.m.cfg.PubSub == nil {
		return c.m.errNoPubSub(c.spec.prefix)
	}
	c.m.invalidateNear(c.spec.prefix, keys, reset)
	err := c.writePipelined(ctx, keys, reset, fn) // one round trip (near_pipe.go)
	if errors.Is(err, errNotPipelined) {
		// The write needs its statements' results: a transaction.
		err = txhooks.Run(ctx, c.m.pool, func(ctx context.Context, tx *txhooks.Tx) error {
			if err := fn(ctx, tx); err != nil {
				return err
			}
			return c.m.publishNear(ctx, tx, c.spec.prefix, keys, reset, true)
		})
	}
	c.m.invalidateNear(c.spec.prefix, keys, reset)
	return err
}

// prefixHeld reports whether this cache found its prefix registered by a
// near cache less than nearHeldMemo ago: it then publishes without asking.
func (c *Cache) prefixHeld() bool {
	until := c.heldUntil.Load()
	return until != 0 && c.m.mono() < until
}

func (c *Cache) markPrefixHeld() { c.heldUntil.Store(c.m.mono() + int64(nearHeldMemo)) }

// writeTx runs a write inside the caller's transaction.
func (c *Cache) writeTx(ctx context.Context, tx pgx.Tx, keys []string, reset bool, fn func(ctx context.Context, q querier) error) error {
	if tx == nil {
		return fmt.Errorf("pgcache: nil transaction")
	}
	if c.mem != nil {
		htx, ok := tx.(*txhooks.Tx)
		if !ok {
			return ErrTxUnsupported
		}
		htx.AfterCommit(func(ctx context.Context) error { return fn(ctx, nil) })
		return nil
	}
	if c.near == nil && !c.prefixHeld() {
		// The shared prefix lock is held until tx ends.
		held, err := c.m.checkNearTx(ctx, tx, c.spec.prefix)
		if err != nil {
			return err
		}
		if !held {
			return fn(ctx, tx)
		}
	}
	if c.m.cfg.PubSub == nil {
		return c.m.errNoPubSub(c.spec.prefix)
	}
	c.m.invalidateNear(c.spec.prefix, keys, reset)
	if err := fn(ctx, tx); err != nil {
		return err
	}
	// Published with the publisher included: with a plain pgx.Tx, this
	// instance's near caches are invalidated when the notification comes
	// back after the commit; with a *txhooks.Tx they are also invalidated
	// synchronously by the after-commit hook.
	htx, hooked := tx.(*txhooks.Tx)
	if err := c.m.publishNear(ctx, tx, c.spec.prefix, keys, reset, hooked); err != nil {
		return err
	}
	if hooked {
		htx.AfterCommit(func(context.Context) error {
			c.m.invalidateNear(c.spec.prefix, keys, reset)
			return nil
		})
	}
	return nil
}

func (c *Cache) logDebug(ctx context.Context, msg, key string, n int) {
	if c.logger.Enabled(ctx, slog.LevelDebug) {
		c.logger.DebugContext(ctx, msg, slog.String("key", key), slog.Int("value_bytes", n))
	}
}
