package pgcache_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/pgcache"
)

// NocoBase bloom-filter.test.ts, for both stores; on postgres, shared by instances.
func TestBloomFilter(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	for _, st := range stores {
		m := newManager(t, db.NewPool(t, &pgtest.PoolOptions{AppName: "inst-a-" + st, MaxConns: 4}), &pgcache.ManagerConfig{AppName: "app-" + st})
		bf, err := m.CreateBloomFilter(ctx, &pgcache.BloomFilterConfig{Store: st})
		require.NoError(t, err)
		require.NoError(t, bf.Reserve(ctx, "bf", 0.01, 1000))

		require.NoError(t, bf.Add(ctx, "bf", "hello"))
		ok, err := bf.Exists(ctx, "bf", "hello")
		require.NoError(t, err)
		require.True(t, ok)
		ok, err = bf.Exists(ctx, "bf", "world")
		require.NoError(t, err)
		require.False(t, ok)

		require.NoError(t, bf.MAdd(ctx, "bf", "a", "b", "c"))
		for _, v := range []string{"a", "b", "c", "hello"} {
			ok, err := bf.Exists(ctx, "bf", v)
			require.NoError(t, err)
			require.True(t, ok, v)
		}

		// Never reserved: Add is a no-op and Exists is false.
		require.NoError(t, bf.Add(ctx, "nope", "hello"))
		ok, err = bf.Exists(ctx, "nope", "hello")
		require.NoError(t, err)
		require.False(t, ok)

		// Reserving again keeps the content.
		require.NoError(t, bf.Reserve(ctx, "bf", 0.01, 1000))
		ok, err = bf.Exists(ctx, "bf", "hello")
		require.NoError(t, err)
		require.True(t, ok)

		require.Error(t, bf.Reserve(ctx, "bad", 0, 10))
		require.Error(t, bf.Reserve(ctx, "bad", 0.1, 0))

		// No false negatives over many values; few false positives.
		for i := range 200 {
			require.NoError(t, bf.Add(ctx, "bf", "v"+strconv.Itoa(i)))
		}
		fp := 0
		for i := range 200 {
			ok, err := bf.Exists(ctx, "bf", "v"+strconv.Itoa(i))
			require.NoError(t, err)
			require.True(t, ok)
			ok, err = bf.Exists(ctx, "bf", "absent"+strconv.Itoa(i))
			require.NoError(t, err)
			if ok {
				fp++
			}
		}
		require.Less(t, fp, 20)

		if st == pgcache.StorePostgres {
			other := newManager(t, db.NewPool(t, &pgtest.PoolOptions{AppName: "inst-b", MaxConns: 2}), &pgcache.ManagerConfig{AppName: "app-" + st})
			bf2, err := other.CreateBloomFilter(ctx, nil)
			require.NoError(t, err)
			ok, err := bf2.Exists(ctx, "bf", "hello")
			require.NoError(t, err)
			require.True(t, ok, "another instance sees the filter")
		}
	}
}

// A bloom-filter write is a write like any other: a near cache holding the
// filter's prefix is invalidated, on the writer's instance before the write
// returns and on other instances once delivered. Before, Reserve and MAdd
// wrote cache_entries directly, skipping the near-cache registry check.
func TestBloomFilterInvalidatesNearCaches(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	a := newPlainInstance(t, db, "inst-a", false)
	aNear := newCache(t, a.Manager, pgcache.CacheConfig{Name: "bf-near", Prefix: pgcache.BloomFilterCacheName, NearCache: true})
	aBloom, err := a.CreateBloomFilter(ctx, nil)
	require.NoError(t, err)
	b := newPlainInstance(t, db, "inst-b", false)
	bBloom, err := b.CreateBloomFilter(ctx, nil)
	require.NoError(t, err)

	// cachedBits reads the filter through the near cache until it is served
	// from memory, and returns its bytes.
	cachedBits := func() []byte {
		t.Helper()
		v, ok, err := pgcache.Get[[]byte](ctx, aNear, "bf")
		require.NoError(t, err)
		require.True(t, ok)
		hits := aNear.Stats().NearHits
		again, _, err := pgcache.Get[[]byte](ctx, aNear, "bf")
		require.NoError(t, err)
		require.Equal(t, v, again)
		require.Equal(t, hits+1, aNear.Stats().NearHits, "served from the near cache")
		return v
	}

	require.NoError(t, aBloom.Reserve(ctx, "bf", 0.01, 100))
	empty := cachedBits()
	require.NoError(t, aBloom.Add(ctx, "bf", "x"))
	require.NotEqual(t, empty, cachedBits(), "same-instance bloom write seen at once")

	before := cachedBits()
	inval := aNear.Stats().NearInvalidations
	require.NoError(t, bBloom.MAdd(ctx, "bf", "y", "z"))
	waitNear(t, aNear, func() bool { return aNear.Stats().NearInvalidations > inval },
		"bloom write on another instance invalidates")
	require.NotEqual(t, before, cachedBits())
}
