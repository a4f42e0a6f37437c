package pgcache_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/faultproxy"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/migrations"
	"github.com/pgcoord/pgcoord/pgcache"
)

func switchoverPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// nearOn is an instance with a near cache whose connections (cache and
// listener) all go to url.
func nearOn(t *testing.T, url, name string) *nearInstance {
	t.Helper()
	ps := startPubSub(t, switchoverPool(t, url), name, listen.Config{PollInterval: 100 * time.Millisecond, ReconnectMaxDelay: 200 * time.Millisecond})
	pool := switchoverPool(t, url)
	m := newManager(t, pool, &pgcache.ManagerConfig{AppName: "app", PubSub: ps})
	return &nearInstance{name: name, pool: pool, ps: ps, m: m,
		cache: newCache(t, m, pgcache.CacheConfig{Name: "near", NearCache: true})}
}

// TestNearCacheSwitchover: an instance whose connections move to another
// cluster with lower transaction ids (a blue/green switchover, a DNS name
// moved) flushes its near cache and then keeps receiving invalidations from
// the new cluster: it never serves a value overwritten there.
func TestNearCacheSwitchover(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// A: a database of the shared server; B: a database of the same name on
	// a new server (whose transaction ids are lower).
	dbA := pgtest.NewDB(t)
	srvB := pgtest.NewPrivateServer(t)
	var admin *pgx.Conn
	require.Eventually(t, func() bool { // a new server on a loaded machine may take a while
		var err error
		admin, err = pgx.Connect(ctx, srvB.AdminURL())
		return err == nil
	}, time.Minute, 100*time.Millisecond)
	_, err := admin.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{dbA.Name}.Sanitize())
	require.NoError(t, err)
	require.NoError(t, admin.Close(ctx))
	urlA, urlB := dbA.URL, srvB.URLFor(dbA.Name)
	_, err = migrations.Up(ctx, switchoverPool(t, urlB), &migrations.Options{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	poolA := switchoverPool(t, urlA)
	for range 500 { // A's transaction ids run ahead of B's
		_, err := poolA.Exec(ctx, `SELECT pg_current_xact_id()`)
		require.NoError(t, err)
	}
	proxy, url := faultproxy.StartFor(t, urlA)
	reader := nearOn(t, url, "reader")
	writerA := nearOn(t, urlA, "writer-a")
	writerB := nearOn(t, urlB, "writer-b")

	require.NoError(t, writerA.cache.Set(ctx, "k", "v1", 0))
	require.NoError(t, writerB.cache.Set(ctx, "k", "v1", 0)) // B holds the same data
	require.Eventually(t, func() bool {
		v, ok, err := pgcache.Get[string](ctx, reader.cache, "k")
		return err == nil && ok && v == "v1"
	}, waitFor, tick)

	hostB, err := faultproxy.HostPort(urlB)
	require.NoError(t, err)
	proxy.SetTarget(hostB)
	proxy.Cut()
	require.Eventually(t, func() bool { return reader.ps.Stats().Switchovers == 1 && reader.ps.Healthy() }, waitFor, tick)

	// Cached again from B, then overwritten on B.
	require.Eventually(t, func() bool {
		v, ok, err := pgcache.Get[string](ctx, reader.cache, "k")
		return err == nil && ok && v == "v1"
	}, waitFor, tick)
	hits := reader.cache.Stats().NearHits
	_, _, err = pgcache.Get[string](ctx, reader.cache, "k")
	require.NoError(t, err)
	require.Greater(t, reader.cache.Stats().NearHits, hits, "served from the near cache")
	require.NoError(t, writerB.cache.Set(ctx, "k", "v2", 0))
	waitNear(t, reader.cache, func() bool {
		v, ok, err := pgcache.Get[string](ctx, reader.cache, "k")
		return err == nil && ok && v == "v2"
	}, "the near cache must take the new cluster's invalidations")
}
