// Package pgcache is NocoBase's cache (@nocobase/cache: CacheManager, Cache,
// counters) on PostgreSQL, for every instance of a clustered application.
//
// A [Manager] (one per app and instance, [NewManager]) creates named caches
// with [Manager.CreateCache]. Each [Cache] has a store:
//
//   - [StorePostgres] (the default): rows of one UNLOGGED table,
//     cache_entries (migration 00010), shared by every instance. UNLOGGED
//     means no WAL: writes are cheap, and the table is emptied by a crash
//     of PostgreSQL and is not replicated (reads from a replica miss). A
//     cache may be lost, never wrong.
//   - [StoreMemory]: a per-instance LRU bounded by MaxEntries (default
//     2000), as NocoBase's memory store: the least recently used entry is
//     evicted inside the Set or MSet that goes past the bound, so the bound
//     holds whenever a call returns. Instances do not share it.
//
// # Keys and values
//
// Keys are namespaced "app:prefix:key" ([Cache.Key]): the app name of the
// Manager and the prefix of the cache (its name by default) are separate
// columns, so two apps on one database, or two caches, never see each
// other's keys, and [Cache.Reset] deletes this cache's entries only
// (NocoBase's Redis store ran FLUSHDB). A key is 1 to [MaxKeyBytes] bytes
// of UTF-8 without NUL; [ErrEmptyKey] and [ErrInvalidKey] otherwise.
//
// Values are JSON (encoding/json); a []byte is stored as it is and read
// back as it is. A value that cannot be encoded, that encodes to JSON null
// (NocoBase's Redis rule), or that is larger than MaxValueBytes (16 MiB by
// default) returns an error wrapping [ErrNotCacheable] or [ErrValueTooLarge]
// and nothing is written. Untyped reads ([Cache.Get], [Cache.MGet],
// [Cache.GetValueInObject], [Cache.Wrap], [Cache.WrapWithCondition]) decode
// into any with numbers as json.Number (encoding/json's UseNumber): an
// integer above 2^53 comes back exact, and a value read and written back is
// stored unchanged. The generic helpers [Get], [MGet], [GetValueInObject],
// [Wrap] and [WrapWithCondition] decode into a type.
//
// # Expiry
//
// TTLs are time.Duration (NocoBase used milliseconds): 0 means the cache's
// TTL (CacheConfig.TTL, none by default), [NoExpiry] means none. Expiry is
// decided by the database clock: every read filters expires_at > now(), so
// no read ever returns an expired entry, whatever the instances' clocks say.
// A sweeper ([Manager.Start], or [Manager.Sweep] on demand) deletes expired
// rows in bounded batches, and trims caches with MaxEntries to their newest
// writes, oldest first. Each batch holds a PostgreSQL advisory transaction
// lock, so one instance sweeps at a time; the others skip. MaxEntries on the
// postgres store is therefore enforced at each sweep, not on each write.
//
// # Atomicity
//
// Every read is one statement (one round trip), MGet included. Concurrent
// Gets of one postgres-store cache share statements, as group commit
// shares commits: a Get that finds a free lane (fewer reads of the cache in
// flight than the pool has connections) runs its own point SELECT at once;
// Gets that find every lane busy queue, and the first read to end reads
// them all with one SELECT … key = ANY. Each Get keeps its contract: its
// ctx ends only its wait, a statement error reaches only the Gets of that
// statement, expiry is the statement's. Every write
// to a prefix no near cache holds is one round trip, MSet and MDel included
// (see Near cache for the registry check it carries, and for the
// transaction of a write to a near-cached prefix). [Cache.SetValueInObject] and [Cache.DelValueInObject] merge the
// field in SQL under the row lock and keep the entry's expiry (NocoBase read,
// modified and rewrote the object without TTL). [Counter] increments
// ([Manager.CreateCounter], [Cache.Counter]) are one
// upsert: concurrent increments from any number of instances are never lost.
// [Cache.SetTx] and [Cache.DelTx] write in the caller's transaction: other
// sessions see the write if and only if it commits.
//
// # Wrap
//
// [Cache.Wrap] (and the generic [Wrap]) reads, or runs the loader and stores
// its result; the result has one shape whether it was cached or loaded (the
// untyped form returns what Get would read back, the generic form a T). A
// nil result (a nil *T: "not found") is returned with no error and not
// stored, so the loader runs again next time (NocoBase's wrap threw
// instead); for negative caching, return a non-nil value that records the
// absence. Concurrent calls for one key on one instance run the loader
// once (singleflight). With CacheConfig.ClusterSingleFlight the loader runs
// once across all instances at a time: the first takes a per-key session
// advisory lock, loads, stores and unlocks; the others poll (every 5 ms,
// backing off to 100 ms) for the stored value or the lock, counted in
// [Stats].ClusterWaits. The locks live on one connection per Manager opened
// outside the pool, so a Wrap holds no pool connection while its loader
// runs and loaders may read through the same pool. A holder that dies
// releases the lock with its session; if the lock connection ends while a
// loader runs, another instance may load the key at the same time (logged at
// warning level, counted in [Stats].ClusterLocksLost). [Cache.WrapWithCondition] (and the generic
// [WrapWithCondition]) follows NocoBase: BypassCache skips the cache;
// without IsCacheable only truthy values count, both ways (falsy cached
// values such as 0, "" and false are misses, falsy results are not stored);
// with IsCacheable, what it accepts is stored and read back, so a cacheable
// 0 is a hit.
//
// # Near cache
//
// CacheConfig.NearCache puts an in-process LRU in front of the postgres
// store. Invalidation follows the data (app, prefix, key), not the writer's
// configuration: every write through any cache of a prefix that a near cache
// may hold (Set, Del, Reset, MSet, MDel, the object and counter calls, Wrap's
// store, and SetTx/DelTx after their commit) publishes an invalidation
// through [listen.PubSub] (ManagerConfig.PubSub) in the same transaction as
// the write, so it is delivered if and only if the write commits, to every
// instance, the writer's included; and the writer's Manager drops the keys
// from all its near caches of the prefix before the write returns.
//
// Writers learn that a near cache may hold a prefix from a registry: each
// Manager with near caches keeps one row per prefix in cache_entries, under
// a reserved prefix no cache can have, leased for 2 minutes and renewed
// every 30 s. A write through a cache without a near cache takes a shared
// advisory lock on the prefix, checks the registry and writes, in one
// pipelined round trip (one implicit transaction): that is the whole cost
// of a write to a prefix no near cache holds. When a registration exists
// nothing is written by that round trip and the write is redone with its
// invalidation, as a near cache's own writes are, and the cache skips the
// check for a minute. A write with its invalidation is one pipelined round
// trip too (one implicit transaction: the write, the invalidation's
// message, committed together) with synchronous_commit off for that
// transaction only: cache_entries is UNLOGGED, so a crash empties it
// anyway, and near caches flush when their listener reconnects. Writes that
// need their results (counters, object fields, bloom filters) take a
// transaction of a few round trips instead. Registering takes
// the lock exclusively, so it waits for writes in flight and every later
// write sees it; CreateCache of a near cache therefore waits for open
// transactions that wrote the prefix through SetTx/DelTx. A Manager without
// a PubSub cannot invalidate: its writes to a prefix a near cache holds fail
// with an error wrapping [ErrNearCacheNeedsPubSub] and write nothing. Inside
// a REPEATABLE READ or SERIALIZABLE transaction the registry is read from an
// old snapshot, so SetTx/DelTx publish whenever the Manager has a PubSub
// (without one they cannot tell, and do not).
//
// Guarantees: read-your-writes on the writing instance, for every near cache
// of the prefix on the writer's Manager (dropped before the write returns;
// with a plain pgx.Tx in SetTx/DelTx, when this instance's own notification
// arrives, with a *txhooks.Tx at commit); other Managers sharing the PubSub
// get the invalidation after the commit. Another instance never serves the
// old value once the invalidation is delivered to it: a value read from
// PostgreSQL is stored only if no invalidation happened while it was being
// read. While the listener is not healthy, or the Manager's registration of
// the prefix was not renewed in the last 90 s, the near cache serves nothing
// and stores nothing (reads go to PostgreSQL); after the listener reconnects
// ([listen.PubSub.Epoch] changed, including a switchover to another
// server) or the registration had to be made again, the near cache is
// flushed before it serves again. An entry never outlives its expiry.
// Between a listener connection dying and the listener noticing, an
// instance may serve a value overwritten in that window: that is the
// residual staleness, bounded by the listener's failure detection.
// MaxEntries eviction and expiry sweeps by the sweeper do not invalidate
// near caches (near entries keep their own expiry). Writes made outside
// pgcoord (plain SQL on cache_entries) are not seen. Close the Manager
// before the PubSub, since writes to near-cached prefixes fail once the
// PubSub is closed.
//
// # Bloom filters
//
// [Manager.CreateBloomFilter] gives NocoBase's experimental bloom filters
// (Reserve, Add, MAdd, Exists) stored in the "bloom-filter" cache; on the
// postgres store additions lock the filter's row, so they are atomic across
// instances. They are writes like any other: a near cache of the
// "bloom-filter" prefix is invalidated by them.
//
// # Failure model
//
// The fault contract (connection cut, server restart, failover,
// switchover, long transaction, full NOTIFY queue, slow handler, SIGKILL,
// silent partition) of each store and of the near cache is the "Cache"
// section of docs/failure-model.md; every default is in the "pgcache"
// section of docs/defaults.md. Errors from PostgreSQL are returned,
// wrapped, never turned into misses.
// After [Manager.Close] every call returns [ErrClosed]. A cancelled context
// writes nothing. Background work (sweeps) logs failures at warning level
// through ManagerConfig.Logger, with attributes cache, key, value_bytes.
package pgcache
