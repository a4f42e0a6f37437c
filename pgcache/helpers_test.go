package pgcache_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/pgcache"
)

func newManager(t testing.TB, pool *pgxpool.Pool, cfg *pgcache.ManagerConfig) *pgcache.Manager {
	t.Helper()
	m, err := pgcache.NewManager(pool, cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, m.Close(ctx))
	})
	return m
}

func newCache(t testing.TB, m *pgcache.Manager, cfg pgcache.CacheConfig) *pgcache.Cache {
	t.Helper()
	c, err := m.CreateCache(context.Background(), cfg)
	require.NoError(t, err)
	return c
}

var stores = []string{pgcache.StorePostgres, pgcache.StoreMemory}

// rowCount counts the cache_entries rows of one app (and prefix, when given).
func rowCount(t *testing.T, pool *pgxpool.Pool, app, prefix string) int {
	t.Helper()
	var n int
	err := pool.QueryRow(context.Background(),
		`SELECT count(*) FROM pgcoord.cache_entries WHERE app = $1 AND ($2 = '' OR prefix = $2)`, app, prefix).Scan(&n)
	require.NoError(t, err)
	return n
}

// eachStore runs f once per store, in a subtest named after the store, with
// a cache of that store created on m from cfg (Name defaults to "c";
// the store's name is appended).
func eachStore(t *testing.T, m *pgcache.Manager, cfg pgcache.CacheConfig, f func(t *testing.T, c *pgcache.Cache)) {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "c"
	}
	name := cfg.Name
	for _, st := range stores {
		t.Run(st, func(t *testing.T) {
			cfg.Name, cfg.Store = name+"-"+st, st
			f(t, newCache(t, m, cfg))
		})
	}
}

// perStore is a parallel test over every store: a database of its own, a
// Manager of app "app" on it, and eachStore.
func perStore(t *testing.T, cfg pgcache.CacheConfig, f func(t *testing.T, c *pgcache.Cache)) {
	t.Helper()
	perStoreOf(t, &pgcache.ManagerConfig{AppName: "app"}, cfg, func(t *testing.T, _ *pgcache.Manager, c *pgcache.Cache) { f(t, c) })
}

// perStoreOf is perStore with a Manager from mcfg (nil: the defaults),
// which f also gets.
func perStoreOf(t *testing.T, mcfg *pgcache.ManagerConfig, cfg pgcache.CacheConfig, f func(t *testing.T, m *pgcache.Manager, c *pgcache.Cache)) {
	t.Helper()
	t.Parallel()
	db := pgtest.NewDB(t)
	m := newManager(t, db.Pool, mcfg)
	eachStore(t, m, cfg, func(t *testing.T, c *pgcache.Cache) { f(t, m, c) })
}

// ttlOf returns the TTL of key, which must be there.
func ttlOf(t *testing.T, c *pgcache.Cache, key string) time.Duration {
	t.Helper()
	ttl, ok, err := c.TTL(context.Background(), key)
	require.NoError(t, err)
	require.True(t, ok, "key %q is there", key)
	return ttl
}

// requireNoTTL checks that key is missing (TTL reports it so).
func requireNoTTL(t *testing.T, c *pgcache.Cache, key string) {
	t.Helper()
	_, ok, err := c.TTL(context.Background(), key)
	require.NoError(t, err)
	require.False(t, ok, "key %q is missing", key)
}

// waitSignal waits until cond holds, checking it again each time the channel
// from changed (taken before each check, so no event is missed) closes, and
// fails after waitFor.
func waitSignal(t *testing.T, changed func() <-chan struct{}, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	pgtest.WaitUntil(t, waitFor, changed, cond, msgAndArgs...)
}

// receive waits for one value from ch, failing after waitFor.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitFor):
		require.FailNow(t, "timed out waiting: "+what)
		panic("unreachable")
	}
}

// openCache opens a parallel test on one cache: a database of its own, a
// Manager on it (mcfg; nil: the defaults) and a cache created from cfg
// (Name defaults to "c").
func openCache(t *testing.T, mcfg *pgcache.ManagerConfig, cfg pgcache.CacheConfig) (*pgtest.DB, *pgcache.Manager, *pgcache.Cache) {
	t.Helper()
	t.Parallel()
	db := pgtest.NewDB(t)
	m := newManager(t, db.Pool, mcfg)
	if cfg.Name == "" {
		cfg.Name = "c"
	}
	return db, m, newCache(t, m, cfg)
}

// instanceCaches opens cache "c" of app "app" once per instance name, each
// on a Manager with a pool of its own (maxConns connections).
func instanceCaches(t *testing.T, db *pgtest.DB, maxConns int32, names ...string) []*pgcache.Cache {
	t.Helper()
	caches := make([]*pgcache.Cache, 0, len(names))
	for _, inst := range names {
		pool := db.NewPool(t, &pgtest.PoolOptions{AppName: inst, MaxConns: maxConns})
		m := newManager(t, pool, &pgcache.ManagerConfig{AppName: "app"})
		caches = append(caches, newCache(t, m, pgcache.CacheConfig{Name: "c"}))
	}
	return caches
}
