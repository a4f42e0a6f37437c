package pgcache_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/pgcache"
)

// plainInstance is an instance of app "app" with its own pools, a started
// PubSub (unless noPubSub) and a Manager, but no cache yet.
type plainInstance struct {
	*pgcache.Manager
	pool *pgxpool.Pool
	ps   *listen.PubSub
}

func newPlainInstance(t *testing.T, db *pgtest.DB, name string, noPubSub bool) plainInstance {
	t.Helper()
	cfg := &pgcache.ManagerConfig{AppName: "app"}
	if !noPubSub {
		cfg.PubSub = startPubSub(t, db.NewPool(t, &pgtest.PoolOptions{AppName: name + "-listen", MaxConns: 2}), name, listen.Config{})
	}
	pool := db.NewPool(t, &pgtest.PoolOptions{AppName: name, MaxConns: 4})
	return plainInstance{Manager: newManager(t, pool, cfg), pool: pool, ps: cfg.PubSub}
}

// cachedNear reads key twice through c and checks the second read was served
// from the near cache, so a later stale read would be visible.
func cachedNear(t *testing.T, c *pgcache.Cache, key, want string) {
	t.Helper()
	v, _ := getString(t, c, key)
	require.Equal(t, want, v)
	hits := c.Stats().NearHits
	v, _ = getString(t, c, key)
	require.Equal(t, want, v)
	require.Equal(t, hits+1, c.Stats().NearHits, "served from the near cache")
}

// Invalidation follows the data (app, prefix, key), not the writer's
// configuration: a write through any cache of a prefix reaches every near
// cache of that prefix, on the writer's instance at once and on every other
// instance once delivered. Before, a near cache on the same instance was
// skipped (skip-self), and a cache without NearCache published nothing.
func TestNearCacheSharedPrefix(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()

	// Instance A: two near caches and a plain cache on prefix "p".
	a := newPlainInstance(t, db, "inst-a", false)
	a1 := newCache(t, a.Manager, pgcache.CacheConfig{Name: "a1", Prefix: "p", NearCache: true})
	a2 := newCache(t, a.Manager, pgcache.CacheConfig{Name: "a2", Prefix: "p", NearCache: true})
	aPlain := newCache(t, a.Manager, pgcache.CacheConfig{Name: "a-plain", Prefix: "p"})
	// Instance B: a plain cache only (a rolling deploy turning NearCache on).
	b := newPlainInstance(t, db, "inst-b", false)
	bPlain := newCache(t, b.Manager, pgcache.CacheConfig{Name: "b-plain", Prefix: "p"})
	// Instance C: one near cache.
	c := newPlainInstance(t, db, "inst-c", false)
	c1 := newCache(t, c.Manager, pgcache.CacheConfig{Name: "c1", Prefix: "p", NearCache: true})

	// settled waits until c1 (another instance) reads want, then checks that
	// every near cache serves want from memory.
	settled := func(want string) {
		t.Helper()
		waitNear(t, c1, func() bool { v, _ := getString(t, c1, "k"); return v == want })
		for _, nc := range []*pgcache.Cache{a1, a2, c1} {
			cachedNear(t, nc, "k", want)
		}
	}
	require.NoError(t, a1.Set(ctx, "k", "v1", 0))
	settled("v1")

	// A write through one near cache reaches its twin on the same instance at once.
	require.NoError(t, a1.Set(ctx, "k", "v2", 0))
	v, _ := getString(t, a2, "k")
	require.Equal(t, "v2", v, "same-instance near cache with the same prefix")
	settled("v2")

	// A plain cache on the same instance: every near cache of the prefix at once.
	require.NoError(t, aPlain.Set(ctx, "k", "v3", 0))
	for _, nc := range []*pgcache.Cache{a1, a2} {
		v, _ := getString(t, nc, "k")
		require.Equal(t, "v3", v, "plain write on the same instance")
	}
	settled("v3")

	// A plain cache on an instance with no near cache at all, every write kind.
	require.NoError(t, bPlain.Set(ctx, "k", "v4", 0))
	for _, nc := range []*pgcache.Cache{a1, a2, c1} {
		waitNear(t, nc, func() bool { v, _ := getString(t, nc, "k"); return v == "v4" }, "plain write on another instance")
		cachedNear(t, nc, "k", "v4")
	}
	require.NoError(t, bPlain.MSet(ctx, []pgcache.Item{{Key: "k", Value: "v5"}}, 0))
	for _, nc := range []*pgcache.Cache{a1, a2, c1} {
		waitNear(t, nc, func() bool { v, _ := getString(t, nc, "k"); return v == "v5" })
		cachedNear(t, nc, "k", "v5")
	}
	require.NoError(t, bPlain.Del(ctx, "k"))
	for _, nc := range []*pgcache.Cache{a1, a2, c1} {
		waitNear(t, nc, func() bool { _, ok := getString(t, nc, "k"); return !ok })
	}
	require.NoError(t, bPlain.Set(ctx, "n", 1, 0))
	for _, nc := range []*pgcache.Cache{a1, c1} {
		waitNear(t, nc, func() bool { v, ok, err := nc.Get(ctx, "n"); return err == nil && ok && v == json.Number("1") })
	}
	_, err := bPlain.Counter().Incr(ctx, "n")
	require.NoError(t, err)
	for _, nc := range []*pgcache.Cache{a1, c1} {
		waitNear(t, nc, func() bool { v, ok, err := nc.Get(ctx, "n"); return err == nil && ok && v == json.Number("2") })
	}
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, bPlain.SetTx(ctx, tx, "n", "in-tx", 0))
	require.NoError(t, tx.Commit(ctx))
	for _, nc := range []*pgcache.Cache{a1, c1} {
		waitNear(t, nc, func() bool { v, ok, err := nc.Get(ctx, "n"); return err == nil && ok && v == "in-tx" })
	}

	// A prefix no near cache holds is written without any message.
	other := newCache(t, b.Manager, pgcache.CacheConfig{Name: "other"})
	published := b.ps.Stats().Published
	require.NoError(t, other.Set(ctx, "k", "v", 0))
	require.NoError(t, other.MSet(ctx, []pgcache.Item{{Key: "k2", Value: 1}}, 0))
	require.Equal(t, published, b.ps.Stats().Published)

	// A Manager without a PubSub cannot invalidate: its write to a prefix a
	// near cache holds fails and writes nothing; other prefixes work.
	d := newPlainInstance(t, db, "inst-d", true)
	dPlain := newCache(t, d.Manager, pgcache.CacheConfig{Name: "d-plain", Prefix: "p"})
	err = dPlain.Set(ctx, "k", "from-d", 0)
	require.ErrorIs(t, err, pgcache.ErrNearCacheNeedsPubSub)
	_, ok, err := aPlain.Get(ctx, "k")
	require.NoError(t, err)
	require.False(t, ok, "nothing written")
	require.NoError(t, newCache(t, d.Manager, pgcache.CacheConfig{Name: "other"}).Set(ctx, "k", "v", 0))
}
