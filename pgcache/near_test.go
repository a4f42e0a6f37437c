package pgcache_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/connname"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/pgcache"
	"github.com/pgcoord/pgcoord/txhooks"
)

const (
	waitFor = 20 * time.Second
	tick    = 5 * time.Millisecond
)

// nearInstance is one instance of an app with a near cache: its own pool for
// the cache, its own PubSub on a pool named name+"-listen" (its listener
// connection is named connname.Name("app", name, connname.RoleListen)).
type nearInstance struct {
	name  string
	pool  *pgxpool.Pool
	ps    *listen.PubSub
	m     *pgcache.Manager
	cache *pgcache.Cache
}

func newNearInstance(t *testing.T, db *pgtest.DB, name string, cfg pgcache.CacheConfig) *nearInstance {
	t.Helper()
	return newNearInstanceWith(t, db, name, cfg, pgcache.ManagerConfig{})
}

// newNearInstanceWith is newNearInstance with mcfg's other fields on the
// Manager.
func newNearInstanceWith(t *testing.T, db *pgtest.DB, name string, cfg pgcache.CacheConfig, mcfg pgcache.ManagerConfig) *nearInstance {
	t.Helper()
	ps := startPubSub(t, db.NewPool(t, &pgtest.PoolOptions{AppName: name + "-listen", MaxConns: 2}), name, listen.Config{})
	pool := db.NewPool(t, &pgtest.PoolOptions{AppName: name, MaxConns: 4})
	// Registered after the PubSub's cleanup, so it runs before it.
	mcfg.AppName, mcfg.PubSub = "app", ps
	m := newManager(t, pool, &mcfg)
	if cfg.Name == "" {
		cfg.Name = "near"
	}
	cfg.NearCache = true
	return &nearInstance{name: name, pool: pool, ps: ps, m: m, cache: newCache(t, m, cfg)}
}

// startPubSub starts a PubSub of app "app" as instance name on pool, with
// cfg's other fields (PollInterval: 200 ms unless set), closed when the
// test ends.
func startPubSub(t *testing.T, pool *pgxpool.Pool, name string, cfg listen.Config) *listen.PubSub {
	t.Helper()
	cfg.AppName, cfg.InstanceID, cfg.Logger = "app", name, slog.New(slog.DiscardHandler)
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 200 * time.Millisecond
	}
	ps, err := listen.New(pool, &cfg)
	require.NoError(t, err)
	require.NoError(t, ps.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, ps.Close(ctx))
	})
	return ps
}

func getString(t *testing.T, c *pgcache.Cache, key string) (string, bool) {
	t.Helper()
	v, ok, err := pgcache.Get[string](context.Background(), c, key)
	require.NoError(t, err)
	return v, ok
}

func invalCount(inst *nearInstance) uint64 {
	s := inst.cache.Stats()
	return s.NearInvalidations + s.NearFlushes
}

// waitInvalidations waits until inst has received at least n invalidations
// or flushes in total.
func waitInvalidations(t *testing.T, inst *nearInstance, n uint64) {
	t.Helper()
	waitNear(t, inst.cache, func() bool { return invalCount(inst) >= n }, "%d invalidations", n)
}

// waitNear waits until cond holds, checking it again each time c's near
// cache counts an invalidation or a flush (the only events that change what
// a near cache serves).
func waitNear(t *testing.T, c *pgcache.Cache, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	waitSignal(t, c.StatsChanged, cond, msgAndArgs...)
}

func TestNearCacheInvalidation(t *testing.T) {
	db, a, b := nearPair(t, pgcache.CacheConfig{})
	ctx := context.Background()
	c := newNearInstance(t, db, "inst-c", pgcache.CacheConfig{})

	require.NoError(t, a.cache.Set(ctx, "k", "v1", 0))
	waitInvalidations(t, b, 1)
	waitInvalidations(t, c, 1)
	for _, inst := range []*nearInstance{a, b, c} {
		v, ok := getString(t, inst.cache, "k")
		require.True(t, ok)
		require.Equal(t, "v1", v)
	}
	before := b.cache.Stats().NearHits
	v, _ := getString(t, b.cache, "k")
	require.Equal(t, "v1", v)
	require.Equal(t, before+1, b.cache.Stats().NearHits, "second read is served from memory")

	// Read-your-writes on the writer, at once; others once the invalidation is delivered.
	bBefore, cBefore := invalCount(b), invalCount(c)
	require.NoError(t, a.cache.Set(ctx, "k", "v2", 0))
	v, _ = getString(t, a.cache, "k")
	require.Equal(t, "v2", v)
	for inst, before := range map[*nearInstance]uint64{b: bBefore, c: cBefore} {
		waitInvalidations(t, inst, before+1)
		v, _ := getString(t, inst.cache, "k")
		require.Equal(t, "v2", v, inst.name)
	}

	// Every write kind invalidates.
	steps := []struct {
		name  string
		write func() error
		check func(*pgcache.Cache)
	}{
		{"del", func() error { return a.cache.Del(ctx, "k") }, func(c *pgcache.Cache) {
			_, ok := getString(t, c, "k")
			require.False(t, ok)
		}},
		{"mset", func() error {
			return a.cache.MSet(ctx, []pgcache.Item{{Key: "k", Value: "m"}, {Key: "j", Value: "m"}}, 0)
		}, func(c *pgcache.Cache) {
			vals, err := c.MGet(ctx, "k", "j")
			require.NoError(t, err)
			require.Equal(t, []any{"m", "m"}, vals)
		}},
		{"mdel", func() error { return a.cache.MDel(ctx, "k", "j") }, func(c *pgcache.Cache) {
			vals, err := c.MGet(ctx, "k", "j")
			require.NoError(t, err)
			require.Equal(t, []any{nil, nil}, vals)
		}},
		{"setValueInObject", func() error { return a.cache.SetValueInObject(ctx, "o", "f", 1) }, func(c *pgcache.Cache) {
			v, ok, err := c.GetValueInObject(ctx, "o", "f")
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, json.Number("1"), v)
		}},
		{"counter", func() error { _, err := a.cache.Counter().Incr(ctx, "n"); return err }, func(c *pgcache.Cache) {
			v, ok, err := c.Get(ctx, "n")
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, json.Number("1"), v)
		}},
		{"reset", func() error { return a.cache.Reset(ctx) }, func(c *pgcache.Cache) {
			vals, err := c.MGet(ctx, "o", "n")
			require.NoError(t, err)
			require.Equal(t, []any{nil, nil}, vals)
		}},
	}
	for _, st := range steps {
		// Warm every near cache with the current values.
		for _, inst := range []*nearInstance{b, c} {
			_, err := inst.cache.MGet(ctx, "k", "j", "o", "n")
			require.NoError(t, err)
		}
		counts := map[*nearInstance]uint64{}
		for _, inst := range []*nearInstance{b, c} {
			counts[inst] = invalCount(inst)
		}
		require.NoError(t, st.write(), st.name)
		// The writer reads its own write at once.
		st.check(a.cache)
		for _, inst := range []*nearInstance{b, c} {
			waitInvalidations(t, inst, counts[inst]+1)
			st.check(inst.cache)
		}
	}
	require.NotZero(t, b.cache.Stats().NearMisses)
}

func TestNearCacheTx(t *testing.T) {
	_, a, b := nearPair(t, pgcache.CacheConfig{})
	ctx := context.Background()
	require.NoError(t, a.cache.Set(ctx, "k", "old", 0))
	waitInvalidations(t, b, 1)
	for _, inst := range []*nearInstance{a, b} {
		v, _ := getString(t, inst.cache, "k")
		require.Equal(t, "old", v)
	}

	// Rolled back: nothing changes anywhere.
	tx, err := txhooks.Begin(ctx, a.pool)
	require.NoError(t, err)
	require.NoError(t, a.cache.SetTx(ctx, tx, "k", "rolled", 0))
	require.NoError(t, tx.Rollback(ctx))
	for _, inst := range []*nearInstance{a, b} {
		v, _ := getString(t, inst.cache, "k")
		require.Equal(t, "old", v)
	}

	// *txhooks.Tx: read-your-writes on commit; others after delivery.
	before := invalCount(b)
	require.NoError(t, txhooks.Run(ctx, a.pool, func(ctx context.Context, tx *txhooks.Tx) error {
		return a.cache.SetTx(ctx, tx, "k", "new", 0)
	}))
	v, _ := getString(t, a.cache, "k")
	require.Equal(t, "new", v)
	waitInvalidations(t, b, before+1)
	v, _ = getString(t, b.cache, "k")
	require.Equal(t, "new", v)

	// Plain pgx.Tx: the writer's own near cache is invalidated by its own
	// notification after the commit.
	_, _ = getString(t, a.cache, "k")
	aBefore, bBefore := invalCount(a), invalCount(b)
	ptx, err := a.pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, a.cache.DelTx(ctx, ptx, "k"))
	require.NoError(t, ptx.Commit(ctx))
	waitInvalidations(t, a, aBefore+1)
	waitInvalidations(t, b, bBefore+1)
	for _, inst := range []*nearInstance{a, b} {
		_, ok := getString(t, inst.cache, "k")
		require.False(t, ok, inst.name)
	}
}

// A killed LISTEN connection: while it is down the near cache serves
// nothing from memory, and after it reconnects it never serves a value
// overwritten meanwhile.
func TestNearCacheListenerKilled(t *testing.T) {
	db, a, b := nearPair(t, pgcache.CacheConfig{})
	ctx := context.Background()
	require.NoError(t, a.cache.Set(ctx, "k", "v1", 0))
	waitInvalidations(t, b, 1)
	v, _ := getString(t, b.cache, "k")
	require.Equal(t, "v1", v)
	v, _ = getString(t, b.cache, "k")
	require.Equal(t, "v1", v)
	require.NotZero(t, b.cache.Stats().NearHits)

	n, err := db.TerminateBackends(ctx, connname.Name("app", "inst-b", connname.RoleListen))
	require.NoError(t, err)
	require.NotZero(t, n)
	// Wait until b noticed (unhealthy or already reconnected), so the write
	// below falls in or before the outage as b sees it.
	require.Eventually(t, func() bool { return !b.ps.Healthy() || b.ps.Epoch() > 0 }, waitFor, tick)
	require.NoError(t, a.cache.Set(ctx, "k", "v2", 0))
	v, _ = getString(t, b.cache, "k")
	require.Equal(t, "v2", v, "an unhealthy or reconnected near cache must not serve the old value")

	require.Eventually(t, func() bool { return b.ps.Healthy() && b.ps.Epoch() > 0 }, waitFor, tick)
	for range 3 {
		v, _ = getString(t, b.cache, "k")
		require.Equal(t, "v2", v)
	}
	require.NotZero(t, b.cache.Stats().NearFlushes)

	// Invalidations flow again after the reconnect.
	before := invalCount(b)
	require.NoError(t, a.cache.Set(ctx, "k", "v3", 0))
	waitInvalidations(t, b, before+1)
	v, _ = getString(t, b.cache, "k")
	require.Equal(t, "v3", v)
}

// The near cache keeps to the entry's expiry by the database clock.
func TestNearCacheExpiry(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	a := newNearInstance(t, db, "inst-a", pgcache.CacheConfig{})
	// Long enough that the read below happens before expiry even on a loaded
	// machine; the wait below is bounded by waitFor.
	require.NoError(t, a.cache.Set(ctx, "k", "v", 2*time.Second))
	v, ok := getString(t, a.cache, "k")
	require.True(t, ok)
	require.Equal(t, "v", v)
	require.Eventually(t, func() bool {
		_, ok := getString(t, a.cache, "k")
		return !ok
	}, waitFor, tick)
}

func TestNearCacheNeedsHealthyPubSub(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	ps, err := listen.New(db.Pool, &listen.Config{AppName: "app", Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ps.Close(context.Background())) })
	m := newManager(t, db.Pool, &pgcache.ManagerConfig{AppName: "app", PubSub: ps})
	c := newCache(t, m, pgcache.CacheConfig{Name: "n", NearCache: true})
	_, err = m.CreateCache(ctx, pgcache.CacheConfig{Name: "m", Store: pgcache.StoreMemory, NearCache: true})
	require.Error(t, err, "a near cache in front of a memory store makes no sense")
	// Not started: never healthy, so every read goes to PostgreSQL.
	require.NoError(t, c.Set(ctx, "k", "v", 0))
	for range 3 {
		v, ok := getString(t, c, "k")
		require.True(t, ok)
		require.Equal(t, "v", v)
	}
	require.Zero(t, c.Stats().NearHits)
}

// Readers on B race with a stream of writes on A; once B has received every
// invalidation, B serves the last value, never an older one.
func TestNearCacheConcurrentReadersNeverKeepStale(t *testing.T) {
	_, a, b := nearPair(t, pgcache.CacheConfig{})
	ctx := context.Background()
	require.NoError(t, a.cache.Set(ctx, "k", 0, 0))
	waitInvalidations(t, b, 1)
	base := invalCount(b)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, _, err := pgcache.Get[int](ctx, b.cache, "k")
				require.NoError(t, err)
			}
		})
	}
	const writes = 50
	for i := 1; i <= writes; i++ {
		require.NoError(t, a.cache.Set(ctx, "k", i, 0))
		v, _, err := pgcache.Get[int](ctx, a.cache, "k")
		require.NoError(t, err)
		require.Equal(t, i, v, "read-your-writes on the writer")
	}
	waitInvalidations(t, b, base+writes)
	close(stop)
	wg.Wait()
	for range 3 {
		v, ok, err := pgcache.Get[int](ctx, b.cache, "k")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, writes, v)
	}
	require.NotZero(t, b.cache.Stats().NearHits)
}

// CacheConfig.NearTTL bounds how long a copy is served from memory, even
// when a change bypasses pgcache (here: SQL straight to the table).
func TestNearCacheTTLBoundsCopies(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	a := newNearInstance(t, db, "inst-a", pgcache.CacheConfig{NearCache: true, NearTTL: 50 * time.Millisecond, NearMaxEntries: 10})
	require.NoError(t, a.cache.Set(ctx, "k", "v1", 0))
	v, _ := getString(t, a.cache, "k")
	require.Equal(t, "v1", v)
	_, err := db.Pool.Exec(ctx, `UPDATE pgcoord.cache_entries SET value = convert_to('"v2"', 'UTF8') WHERE app = 'app' AND key = 'k'`)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		v, _ := getString(t, a.cache, "k")
		return v == "v2"
	}, waitFor, tick)
}

// nearPair opens a parallel test on two instances, inst-a and inst-b, each
// with a near cache from cfg, on a database of its own.
func nearPair(t *testing.T, cfg pgcache.CacheConfig) (*pgtest.DB, *nearInstance, *nearInstance) {
	t.Helper()
	t.Parallel()
	db := pgtest.NewDB(t)
	a, b := nearPairOn(t, db, cfg)
	return db, a, b
}

// nearPairOn opens inst-a and inst-b, each with a near cache from cfg, on db.
func nearPairOn(t *testing.T, db *pgtest.DB, cfg pgcache.CacheConfig) (*nearInstance, *nearInstance) {
	t.Helper()
	return newNearInstance(t, db, "inst-a", cfg), newNearInstance(t, db, "inst-b", cfg)
}
