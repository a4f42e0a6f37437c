package pgcache_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/pgcache"
)

// waitNearInvalidated waits until c has dropped keys (or flushed) since the
// counts in before.
func waitNearInvalidated(t *testing.T, c *pgcache.Cache, before pgcache.Stats) {
	t.Helper()
	waitNear(t, c, func() bool {
		s := c.Stats()
		return s.NearInvalidations+s.NearFlushes > before.NearInvalidations+before.NearFlushes
	})
}

// A registration that lapsed (not renewed within its lease, its row swept),
// then a write that therefore published nothing: the near cache serves
// nothing while the registration is not valid, flushes when it registers
// again, and later writes publish again.
func TestNearCacheLapsedRegistration(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	a := newPlainInstance(t, db, "inst-a", false)
	aNear := newCache(t, a.Manager, pgcache.CacheConfig{Name: "near", Prefix: "p", NearCache: true})
	b := newPlainInstance(t, db, "inst-b", false)
	bPlain := newCache(t, b.Manager, pgcache.CacheConfig{Name: "plain", Prefix: "p"})

	require.NoError(t, aNear.Set(ctx, "k", "v1", 0))
	cachedNear(t, aNear, "k", "v1")

	// The lease ran out and the sweeper deleted the row.
	_, err := db.Pool.Exec(ctx, `DELETE FROM pgcoord.cache_entries WHERE app = 'app' AND prefix LIKE 'pgcoord.pgcache.near-registry%'`)
	require.NoError(t, err)
	a.LapseNearRegistrations()
	published := b.ps.Stats().Published
	require.NoError(t, bPlain.Set(ctx, "k", "v2", 0))
	require.Equal(t, published, b.ps.Stats().Published, "no registration: the write publishes nothing")

	v, _ := getString(t, aNear, "k")
	require.Equal(t, "v2", v, "a lapsed registration serves nothing from memory")
	require.Zero(t, rowCountRegistry(t, db), "not registered again yet")

	require.NoError(t, a.RenewNearRegistrations(ctx))
	require.Equal(t, 1, rowCountRegistry(t, db), "registered again")
	cachedNear(t, aNear, "k", "v2")

	before := aNear.Stats()
	require.NoError(t, bPlain.Set(ctx, "k", "v3", 0))
	waitNearInvalidated(t, aNear, before)
	cachedNear(t, aNear, "k", "v3")
}

func rowCountRegistry(t *testing.T, db *pgtest.DB) int {
	t.Helper()
	var n int
	require.NoError(t, db.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM pgcoord.cache_entries WHERE app = 'app' AND prefix LIKE 'pgcoord.pgcache.near-registry%'`).Scan(&n))
	return n
}

// SetTx/DelTx in a REPEATABLE READ (or SERIALIZABLE) transaction whose
// snapshot predates a near cache's registration cannot see the registration:
// they publish anyway when the Manager has a PubSub, so the near cache that
// registered meanwhile is invalidated at the commit.
func TestNearCacheRegistryCheckRepeatableRead(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	b := newPlainInstance(t, db, "inst-b", false)

	for _, iso := range []pgx.TxIsoLevel{pgx.RepeatableRead, pgx.Serializable} {
		t.Run(string(iso), func(t *testing.T) {
			key := "k-" + string(iso)
			// A cache of its own: a cache that found the prefix registered
			// skips the check for a minute.
			bPlain := newCache(t, b.Manager, pgcache.CacheConfig{Name: "plain-" + string(iso), Prefix: "p"})
			require.NoError(t, bPlain.Set(ctx, key, "v1", 0))
			tx, err := b.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: iso})
			require.NoError(t, err)
			t.Cleanup(func() { _ = tx.Rollback(context.WithoutCancel(ctx)) })
			_, err = tx.Exec(ctx, `SELECT 1`) // the snapshot is taken here
			require.NoError(t, err)

			// A near cache registers after the snapshot and caches the key.
			a := newPlainInstance(t, db, "inst-a-"+string(iso), false)
			aNear := newCache(t, a.Manager, pgcache.CacheConfig{Name: "near", Prefix: "p", NearCache: true})
			cachedNear(t, aNear, key, "v1")

			published := b.ps.Stats().Published
			require.NoError(t, bPlain.SetTx(ctx, tx, key, "v2", 0))
			require.Equal(t, published+1, b.ps.Stats().Published, "published although the snapshot sees no registration")
			before := aNear.Stats()
			require.NoError(t, tx.Commit(ctx))
			waitNearInvalidated(t, aNear, before)
			cachedNear(t, aNear, key, "v2")
		})
	}
}
