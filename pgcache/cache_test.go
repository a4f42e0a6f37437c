package pgcache_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/lockkey"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/pgcache"
	"github.com/pgcoord/pgcoord/txhooks"
)

// NocoBase cache.test.ts 1-2: set then get; del then get misses.
func TestSetGetDel(t *testing.T) {
	perStore(t, pgcache.CacheConfig{}, func(t *testing.T, c *pgcache.Cache) {
		ctx := t.Context()
		require.NoError(t, c.Set(ctx, "key", "value", 0))
		v, ok, err := c.Get(ctx, "key")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, "value", v)

		require.NoError(t, c.Set(ctx, "obj", map[string]any{"a": 1, "b": []int{1, 2}}, 0))
		v, ok, err = c.Get(ctx, "obj")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, map[string]any{"a": json.Number("1"), "b": []any{json.Number("1"), json.Number("2")}}, v)

		require.NoError(t, c.Del(ctx, "key"))
		v, ok, err = c.Get(ctx, "key")
		require.NoError(t, err)
		require.False(t, ok)
		require.Nil(t, v)
		require.NoError(t, c.Del(ctx, "never-set"), "deleting a missing key is fine")

		stats := c.Stats()
		require.EqualValues(t, 2, stats.Hits)
		require.EqualValues(t, 1, stats.Misses)
		require.EqualValues(t, 2, stats.Sets)
	})
}

func TestTypedGetAndBytes(t *testing.T) {
	ctx := context.Background()
	type user struct {
		ID   int    `json:"id"`
		Name string `json:"name"`
	}
	perStoreOf(t, nil, pgcache.CacheConfig{}, func(t *testing.T, m *pgcache.Manager, c *pgcache.Cache) {
		require.NoError(t, c.Set(ctx, "u", user{ID: 7, Name: "ann"}, 0))
		u, ok, err := pgcache.Get[user](ctx, c, "u")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, user{ID: 7, Name: "ann"}, u)

		_, ok, err = pgcache.Get[user](ctx, c, "missing")
		require.NoError(t, err)
		require.False(t, ok)

		// []byte passes through untouched, including bytes that are not JSON or UTF-8.
		raw := []byte{0, 1, 2, 0xff, '{'}
		require.NoError(t, c.Set(ctx, "raw", raw, 0))
		raw[0] = 9 // the cache must not alias the caller's slice
		b, ok, err := pgcache.Get[[]byte](ctx, c, "raw")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, []byte{0, 1, 2, 0xff, '{'}, b)
		v, _, err := c.Get(ctx, "raw")
		require.NoError(t, err)
		require.Equal(t, []byte{0, 1, 2, 0xff, '{'}, v)
		_, _, err = pgcache.Get[user](ctx, c, "raw")
		require.Error(t, err, "raw bytes do not decode into a struct")

		out, err := pgcache.MGet[user](ctx, c, "u", "missing", "u")
		require.NoError(t, err)
		require.Len(t, out, 3)
		require.Equal(t, &user{ID: 7, Name: "ann"}, out[0])
		require.Nil(t, out[1])
		require.Equal(t, &user{ID: 7, Name: "ann"}, out[2])
	})
}

// NocoBase cache.test.ts 3-4: mset/mget positional; mdel.
func TestMSetMGetMDel(t *testing.T) {
	perStore(t, pgcache.CacheConfig{}, func(t *testing.T, c *pgcache.Cache) {
		ctx := t.Context()
		require.NoError(t, c.MSet(ctx, []pgcache.Item{{Key: "k1", Value: "v1"}, {Key: "k2", Value: 2}, {Key: "k1", Value: "v1-last"}}, 0))
		vals, err := c.MGet(ctx, "k1", "nope", "k2")
		require.NoError(t, err)
		require.Equal(t, []any{"v1-last", nil, json.Number("2")}, vals)

		require.NoError(t, c.MDel(ctx, "k1", "k2"))
		vals, err = c.MGet(ctx, "k1", "k2")
		require.NoError(t, err)
		require.Equal(t, []any{nil, nil}, vals)

		vals, err = c.MGet(ctx)
		require.NoError(t, err)
		require.Empty(t, vals)

		// One bad value: nothing written.
		err = c.MSet(ctx, []pgcache.Item{{Key: "a", Value: 1}, {Key: "b", Value: make(chan int)}}, 0)
		require.ErrorIs(t, err, pgcache.ErrNotCacheable)
		_, ok, err := c.Get(ctx, "a")
		require.NoError(t, err)
		require.False(t, ok)

		err = c.MSet(ctx, []pgcache.Item{{Key: "a", Value: 1}, {Key: "", Value: 2}}, 0)
		require.ErrorIs(t, err, pgcache.ErrEmptyKey)
		_, err = c.MGet(ctx, "a", "")
		require.ErrorIs(t, err, pgcache.ErrEmptyKey)
		require.ErrorIs(t, c.MDel(ctx, ""), pgcache.ErrEmptyKey)
	})
}

// NocoBase cache.test.ts 5, plus LIKE metacharacters and glob escapes.
func TestKeys(t *testing.T) {
	ctx := context.Background()
	perStoreOf(t, nil, pgcache.CacheConfig{}, func(t *testing.T, m *pgcache.Manager, c *pgcache.Cache) {
		other := newCache(t, m, pgcache.CacheConfig{Name: "other-" + c.Store(), Store: c.Store()})
		require.NoError(t, c.MSet(ctx, []pgcache.Item{{Key: "key1", Value: 1}, {Key: "key2", Value: 2}}, 0))
		require.NoError(t, other.Set(ctx, "key3", 3, 0))
		keys, err := c.Keys(ctx, "")
		require.NoError(t, err)
		require.Equal(t, []string{"key1", "key2"}, keys)

		require.NoError(t, c.MSet(ctx, []pgcache.Item{
			{Key: "100%", Value: 1}, {Key: "100x", Value: 1},
			{Key: "a_b", Value: 1}, {Key: "axb", Value: 1},
			{Key: "star*", Value: 1}, {Key: "starry", Value: 1},
			{Key: `back\slash`, Value: 1},
		}, 0))
		for pattern, want := range map[string][]string{
			"100%":        {"100%"},
			"a_b":         {"a_b"},
			"a?b":         {"a_b", "axb"},
			`star\*`:      {"star*"},
			"star*":       {"star*", "starry"},
			"key*":        {"key1", "key2"},
			"*%*":         {"100%"},
			`back\\slash`: {`back\slash`},
			"nothing*":    {},
		} {
			got, err := c.Keys(ctx, pattern)
			require.NoError(t, err)
			require.Equal(t, want, got, "pattern %q on %s", pattern, c.Store())
		}
	})
}

// NocoBase cache.test.ts 6-7, atomic and keeping the TTL.
func TestValueInObject(t *testing.T) {
	perStore(t, pgcache.CacheConfig{}, func(t *testing.T, c *pgcache.Cache) {
		ctx := t.Context()
		require.NoError(t, c.Set(ctx, "key", map[string]any{"a": 1, "b": 2}, time.Hour))
		v, ok, err := c.GetValueInObject(ctx, "key", "a")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, json.Number("1"), v)

		require.NoError(t, c.SetValueInObject(ctx, "key", "a", 3))
		v, _, err = c.GetValueInObject(ctx, "key", "a")
		require.NoError(t, err)
		require.Equal(t, json.Number("3"), v)

		require.NoError(t, c.DelValueInObject(ctx, "key", "a"))
		_, ok, err = c.GetValueInObject(ctx, "key", "a")
		require.NoError(t, err)
		require.False(t, ok)
		v, ok, err = c.GetValueInObject(ctx, "key", "b")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, json.Number("2"), v)

		ttl := ttlOf(t, c, "key")
		require.Greater(t, ttl, 50*time.Minute, "object updates keep the entry's TTL")

		// A missing key starts from an empty object; deleting from it is a no-op.
		require.NoError(t, c.SetValueInObject(ctx, "fresh", "x", "y"))
		got, _, err := c.Get(ctx, "fresh")
		require.NoError(t, err)
		require.Equal(t, map[string]any{"x": "y"}, got)
		require.NoError(t, c.DelValueInObject(ctx, "missing", "x"))

		// Not an object: error, value untouched.
		require.NoError(t, c.Set(ctx, "num", 5, 0))
		require.ErrorIs(t, c.SetValueInObject(ctx, "num", "x", 1), pgcache.ErrNotObject)
		require.ErrorIs(t, c.DelValueInObject(ctx, "num", "x"), pgcache.ErrNotObject)
		got, _, err = c.Get(ctx, "num")
		require.NoError(t, err)
		require.Equal(t, json.Number("5"), got)

		// Concurrent writers of different fields never lose each other's field.
		const writers = 16
		var wg sync.WaitGroup
		for i := range writers {
			wg.Go(func() {
				require.NoError(t, c.SetValueInObject(ctx, "shared", string(rune('a'+i)), i))
			})
		}
		wg.Wait()
		obj, ok, err := pgcache.Get[map[string]int](ctx, c, "shared")
		require.NoError(t, err)
		require.True(t, ok)
		require.Len(t, obj, writers)
	})
}

// NocoBase cache.test.ts 8-9 and the truthiness rule.
func TestWrapWithCondition(t *testing.T) {
	perStore(t, pgcache.CacheConfig{}, func(t *testing.T, c *pgcache.Cache) {
		ctx := t.Context()
		obj := map[string]any{"a": 1}
		fn := func(context.Context) (any, error) { return obj, nil }

		v, err := c.WrapWithCondition(ctx, "key", fn, &pgcache.WrapOpts{BypassCache: true})
		require.NoError(t, err)
		require.Equal(t, map[string]any{"a": json.Number("1")}, v)
		_, ok, err := c.Get(ctx, "key")
		require.NoError(t, err)
		require.False(t, ok, "useCache false must not write")

		v, err = c.WrapWithCondition(ctx, "key", fn, nil)
		require.NoError(t, err)
		require.Equal(t, map[string]any{"a": json.Number("1")}, v)
		got, ok, err := c.Get(ctx, "key")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, map[string]any{"a": json.Number("1")}, got)

		notEmpty := func(v any) bool { m, _ := v.(map[string]any); return len(m) > 0 }
		v, err = c.WrapWithCondition(ctx, "k2", func(context.Context) (any, error) { return map[string]any{}, nil },
			&pgcache.WrapOpts{IsCacheable: notEmpty})
		require.NoError(t, err)
		require.Equal(t, map[string]any{}, v)
		_, ok, err = c.Get(ctx, "k2")
		require.NoError(t, err)
		require.False(t, ok, "an empty object is not cacheable here")
		_, err = c.WrapWithCondition(ctx, "k2", func(context.Context) (any, error) { return map[string]any{"x": 1}, nil },
			&pgcache.WrapOpts{IsCacheable: notEmpty})
		require.NoError(t, err)
		_, ok, err = c.Get(ctx, "k2")
		require.NoError(t, err)
		require.True(t, ok)

		// Falsy results are not cached by default; falsy cached values are misses.
		calls := 0
		zero := func(context.Context) (any, error) { calls++; return 0, nil }
		for range 2 {
			v, err = c.WrapWithCondition(ctx, "zero", zero, nil)
			require.NoError(t, err)
			require.Equal(t, json.Number("0"), v)
		}
		require.Equal(t, 2, calls)
		require.NoError(t, c.Set(ctx, "empty", "", 0))
		v, err = c.WrapWithCondition(ctx, "empty", func(context.Context) (any, error) { return "filled", nil }, nil)
		require.NoError(t, err)
		require.Equal(t, "filled", v)
		got, _, err = c.Get(ctx, "empty")
		require.NoError(t, err)
		require.Equal(t, "filled", got)

		loaderErr := errors.New("boom")
		_, err = c.WrapWithCondition(ctx, "err", func(context.Context) (any, error) { return nil, loaderErr }, nil)
		require.ErrorIs(t, err, loaderErr)
	})
}

// Wrap loads once and then reads; a loader error stores nothing. (NocoBase
// cache.test.ts 10, a nil result, is TestWrapNilResult: pgcoord returns it
// without storing instead of failing.)
func TestWrap(t *testing.T) {
	perStore(t, pgcache.CacheConfig{}, func(t *testing.T, c *pgcache.Cache) {
		ctx := t.Context()

		calls := 0
		load := func(context.Context) (int, error) { calls++; return 42, nil }
		for range 3 {
			v, err := pgcache.Wrap(ctx, c, "n", load, 0)
			require.NoError(t, err)
			require.Equal(t, 42, v)
		}
		require.Equal(t, 1, calls)
		v, err := c.Wrap(ctx, "n", func(context.Context) (any, error) { return nil, errors.New("not called") }, 0)
		require.NoError(t, err)
		require.Equal(t, json.Number("42"), v)

		loaderErr := errors.New("boom")
		_, err = pgcache.Wrap(ctx, c, "e", func(context.Context) (int, error) { return 0, loaderErr }, 0)
		require.ErrorIs(t, err, loaderErr)
		_, ok, err := c.Get(ctx, "e")
		require.NoError(t, err)
		require.False(t, ok)
	})
}

// Concurrent Wraps of one key in one instance run the loader once.
func TestWrapSingleFlight(t *testing.T) {
	_, _, c := openCache(t, nil, pgcache.CacheConfig{})
	ctx := context.Background()
	var (
		mu    sync.Mutex
		calls int
	)
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	load := func(context.Context) (string, error) {
		mu.Lock()
		calls++
		mu.Unlock()
		started <- struct{}{}
		<-release
		return "v", nil
	}
	var wg sync.WaitGroup
	results := make([]string, 10)
	for i := range results {
		wg.Go(func() {
			v, err := pgcache.Wrap(ctx, c, "k", load, 0)
			require.NoError(t, err)
			results[i] = v
		})
	}
	receive(t, started, "the loader starts")
	close(release)
	wg.Wait()
	require.Equal(t, 1, calls)
	for _, r := range results {
		require.Equal(t, "v", r)
	}
	require.EqualValues(t, 1, c.Stats().LoaderCalls)
}

// ClusterSingleFlight: 3 instances x 10 concurrent Wraps run the loader once.
func TestWrapClusterSingleFlight(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	var (
		mu    sync.Mutex
		calls int
	)
	load := func(context.Context) (string, error) {
		mu.Lock()
		calls++
		mu.Unlock()
		return "computed", nil
	}
	var caches []*pgcache.Cache
	for _, inst := range []string{"inst-a", "inst-b", "inst-c"} {
		pool := db.NewPool(t, &pgtest.PoolOptions{AppName: inst, MaxConns: 12})
		m := newManager(t, pool, &pgcache.ManagerConfig{AppName: "app"})
		caches = append(caches, newCache(t, m, pgcache.CacheConfig{Name: "c", ClusterSingleFlight: true}))
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range caches {
		for range 10 {
			wg.Go(func() {
				<-start
				v, err := pgcache.Wrap(ctx, c, "k", load, 0)
				require.NoError(t, err)
				require.Equal(t, "computed", v)
			})
		}
	}
	close(start)
	wg.Wait()
	require.Equal(t, 1, calls)
}

func TestCounter(t *testing.T) {
	ctx := context.Background()
	perStoreOf(t, nil, pgcache.CacheConfig{}, func(t *testing.T, m *pgcache.Manager, c *pgcache.Cache) {
		k := c.Counter()
		n, err := k.Incr(ctx, "n")
		require.NoError(t, err)
		require.EqualValues(t, 1, n)
		n, err = k.Incr(ctx, "n")
		require.NoError(t, err)
		require.EqualValues(t, 2, n)
		n, err = k.IncrBy(ctx, "n", 3)
		require.NoError(t, err)
		require.EqualValues(t, 5, n)
		n, err = k.Get(ctx, "n")
		require.NoError(t, err)
		require.EqualValues(t, 5, n)
		require.NoError(t, k.Reset(ctx, "n"))
		n, err = k.Get(ctx, "n")
		require.NoError(t, err)
		require.EqualValues(t, 0, n)

		// 100 concurrent increments (NocoBase counter.test.ts atomicity).
		var wg sync.WaitGroup
		for range 100 {
			wg.Go(func() {
				_, err := k.Incr(ctx, "c")
				require.NoError(t, err)
			})
		}
		wg.Wait()
		n, err = k.Get(ctx, "c")
		require.NoError(t, err)
		require.EqualValues(t, 100, n)

		// Not an integer.
		require.NoError(t, c.Set(ctx, "s", "text", 0))
		_, err = k.Incr(ctx, "s")
		require.ErrorIs(t, err, pgcache.ErrNotInteger)
		_, err = k.Get(ctx, "s")
		require.ErrorIs(t, err, pgcache.ErrNotInteger)
		require.NoError(t, c.Set(ctx, "max", int64(math.MaxInt64), 0))
		_, err = k.Incr(ctx, "max")
		require.ErrorIs(t, err, pgcache.ErrNotInteger)

		// The cache's TTL is set when an increment creates the counter, an
		// existing counter keeps its expiry, an expired one restarts.
		hour, err := m.CreateCounter(ctx, pgcache.CounterConfig{Name: "hour-" + c.Store(), Store: c.Store(), TTL: time.Hour})
		require.NoError(t, err)
		hc, err := m.Cache("hour-" + c.Store())
		require.NoError(t, err)
		_, err = hour.Incr(ctx, "t")
		require.NoError(t, err)
		require.Greater(t, ttlOf(t, hc, "t"), 50*time.Minute)
		require.NoError(t, hc.Set(ctx, "t", 1, 10*time.Minute))
		n, err = hour.Incr(ctx, "t")
		require.NoError(t, err)
		require.EqualValues(t, 2, n)
		require.LessOrEqual(t, ttlOf(t, hc, "t"), 10*time.Minute, "an existing counter keeps its expiry")

		short, err := m.CreateCounter(ctx, pgcache.CounterConfig{Name: "short-" + c.Store(), Store: c.Store(), TTL: 30 * time.Millisecond})
		require.NoError(t, err)
		_, err = short.Incr(ctx, "short")
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			n, err := short.Get(ctx, "short")
			return err == nil && n == 0
		}, 10*time.Second, 5*time.Millisecond)
		n, err = short.Incr(ctx, "short")
		require.NoError(t, err)
		require.EqualValues(t, 1, n)
	})
}

// 3 instances x 1000 concurrent Incr leave exactly 3000.
func TestCounterAcrossInstances(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	var counters []*pgcache.Counter
	for _, c := range instanceCaches(t, db, 4, "inst-a", "inst-b", "inst-c") {
		counters = append(counters, c.Counter())
	}
	const perInstance = 1000
	var wg sync.WaitGroup
	for _, k := range counters {
		for range perInstance {
			wg.Go(func() {
				_, err := k.Incr(ctx, "hits")
				require.NoError(t, err)
			})
		}
	}
	wg.Wait()
	n, err := counters[0].Get(ctx, "hits")
	require.NoError(t, err)
	require.EqualValues(t, 3*perInstance, n)
}

// Three instances of one app share values; another app sees none of them.
func TestInstancesShareValues(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	caches := instanceCaches(t, db, 2, "inst-a", "inst-b", "inst-c")
	require.NoError(t, caches[0].Set(ctx, "k", "from-a", 0))
	for _, c := range caches {
		v, ok, err := c.Get(ctx, "k")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, "from-a", v)
	}
	require.NoError(t, caches[1].Set(ctx, "k", "from-b", 0))
	v, _, err := caches[2].Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "from-b", v)
	require.NoError(t, caches[2].Del(ctx, "k"))
	_, ok, err := caches[0].Get(ctx, "k")
	require.NoError(t, err)
	require.False(t, ok)
	require.Equal(t, "app:c:k", caches[0].Key("k"))
}

// Reset clears only its own cache: not other caches, not other apps.
func TestResetIsolation(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	m1 := newManager(t, db.Pool, &pgcache.ManagerConfig{AppName: "app1"})
	m2 := newManager(t, db.Pool, &pgcache.ManagerConfig{AppName: "app2"})
	a := newCache(t, m1, pgcache.CacheConfig{Name: "a"})
	b := newCache(t, m1, pgcache.CacheConfig{Name: "b"})
	// Prefix "a:" must not be confused with cache "a" either.
	ab := newCache(t, m1, pgcache.CacheConfig{Name: "a-colon", Prefix: "a:b"})
	other := newCache(t, m2, pgcache.CacheConfig{Name: "a"})
	for _, c := range []*pgcache.Cache{a, b, ab, other} {
		require.NoError(t, c.Set(ctx, "k", c.Name(), 0))
	}
	require.NoError(t, a.Reset(ctx))
	_, ok, err := a.Get(ctx, "k")
	require.NoError(t, err)
	require.False(t, ok)
	for _, c := range []*pgcache.Cache{b, ab, other} {
		v, ok, err := c.Get(ctx, "k")
		require.NoError(t, err)
		require.True(t, ok, c.Name())
		require.Equal(t, c.Name(), v)
	}
	keys, err := other.Keys(ctx, "*")
	require.NoError(t, err)
	require.Equal(t, []string{"k"}, keys)

	require.NoError(t, m1.FlushAll(ctx))
	require.Equal(t, 0, rowCount(t, db.Pool, "app1", ""))
	require.Equal(t, 1, rowCount(t, db.Pool, "app2", ""))
}

func TestTTLAndExpiry(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	m := newManager(t, db.Pool, nil)
	ctx := context.Background()
	for _, st := range stores {
		c := newCache(t, m, pgcache.CacheConfig{Name: "c-" + st, Store: st})
		require.NoError(t, c.Set(ctx, "forever", 1, 0))
		ttl := ttlOf(t, c, "forever")
		require.Equal(t, pgcache.NoExpiry, ttl)

		requireNoTTL(t, c, "missing")

		require.NoError(t, c.Set(ctx, "hour", 1, time.Hour))
		ttl = ttlOf(t, c, "hour")
		require.LessOrEqual(t, ttl, time.Hour)
		require.Greater(t, ttl, 50*time.Minute)

		require.NoError(t, c.Set(ctx, "short", "v", 30*time.Millisecond))
		require.NoError(t, c.MSet(ctx, []pgcache.Item{{Key: "m1", Value: 1}}, 30*time.Millisecond))
		require.Eventually(t, func() bool {
			_, ok, err := c.Get(ctx, "short")
			return err == nil && !ok
		}, 10*time.Second, 5*time.Millisecond)
		require.Eventually(t, func() bool {
			vals, err := c.MGet(ctx, "m1")
			return err == nil && vals[0] == nil
		}, 10*time.Second, 5*time.Millisecond)
		requireNoTTL(t, c, "short")
		keys, err := c.Keys(ctx, "*")
		require.NoError(t, err)
		require.Equal(t, []string{"forever", "hour"}, keys, "expired keys are not listed")
	}

	// Default TTL of the cache, and NoExpiry overriding it.
	c := newCache(t, m, pgcache.CacheConfig{Name: "default-ttl", TTL: time.Hour})
	require.NoError(t, c.Set(ctx, "a", 1, 0))
	require.NoError(t, c.Set(ctx, "b", 1, pgcache.NoExpiry))
	ttl := ttlOf(t, c, "a")
	require.Greater(t, ttl, 50*time.Minute)
	ttl = ttlOf(t, c, "b")
	require.Equal(t, pgcache.NoExpiry, ttl)
}

// The database clock decides expiry: an entry whose expires_at is in the
// past by the server's clock is never returned.
func TestExpiryUsesDatabaseClock(t *testing.T) {
	db, _, c := openCache(t, &pgcache.ManagerConfig{AppName: "app"}, pgcache.CacheConfig{})
	ctx := context.Background()
	require.NoError(t, c.Set(ctx, "k", 1, time.Hour))
	_, err := db.Pool.Exec(ctx, `UPDATE pgcoord.cache_entries SET expires_at = now() - interval '1 millisecond' WHERE key = 'k'`)
	require.NoError(t, err)
	_, ok, err := c.Get(ctx, "k")
	require.NoError(t, err)
	require.False(t, ok)
}

func TestSweeper(t *testing.T) {
	db, m, c := openCache(t, &pgcache.ManagerConfig{AppName: "app", SweepBatchSize: 3}, pgcache.CacheConfig{})
	ctx := context.Background()
	for i := range 10 {
		require.NoError(t, c.Set(ctx, "exp"+string(rune('a'+i)), i, time.Millisecond))
	}
	require.NoError(t, c.Set(ctx, "keep", 1, 0))
	// Rows of another app are not this manager's to sweep.
	other := newManager(t, db.Pool, &pgcache.ManagerConfig{AppName: "other"})
	require.NoError(t, newCache(t, other, pgcache.CacheConfig{Name: "c"}).Set(ctx, "x", 1, time.Millisecond))
	// Rows of this app written by a cache this manager does not have are swept too.
	sameApp := newManager(t, db.Pool, &pgcache.ManagerConfig{AppName: "app"})
	d := newCache(t, sameApp, pgcache.CacheConfig{Name: "d"})
	require.NoError(t, d.MSet(ctx, []pgcache.Item{{Key: "x", Value: 1}, {Key: "y", Value: 2}}, time.Millisecond))
	// Expired now by the database clock, without waiting for it.
	_, err := db.Pool.Exec(ctx, `UPDATE pgcoord.cache_entries SET expires_at = now() - interval '1 millisecond' WHERE expires_at IS NOT NULL`)
	require.NoError(t, err)
	keys, err := c.Keys(ctx, "exp*")
	require.NoError(t, err)
	require.Empty(t, keys)

	// Another session holds the sweep lock: this instance skips the sweep.
	conn, err := db.Pool.Acquire(ctx)
	require.NoError(t, err)
	sweepKey := lockkey.Key("pgcoord", lockkey.CacheSweep, "app")
	_, err = conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, sweepKey)
	require.NoError(t, err)
	require.NoError(t, m.Sweep(ctx))
	require.Equal(t, 13, rowCount(t, db.Pool, "app", ""))
	_, err = conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, sweepKey)
	require.NoError(t, err)
	conn.Release()

	require.NoError(t, m.Sweep(ctx))
	require.Equal(t, 1, rowCount(t, db.Pool, "app", ""), "all expired rows go, in batches of 3")
	require.Equal(t, 1, rowCount(t, db.Pool, "other", ""))
	require.EqualValues(t, 10, c.Stats().ExpiredSwept)
	require.EqualValues(t, 12, m.Stats().ExpiredSwept)
	require.EqualValues(t, 11, m.Stats().Sets)
}

func TestSweeperRunsAfterStart(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	m := newManager(t, db.Pool, &pgcache.ManagerConfig{AppName: "app", SweepInterval: 10 * time.Millisecond})
	require.NoError(t, m.Start(ctx))
	c := newCache(t, m, pgcache.CacheConfig{Name: "c"})
	require.NoError(t, c.Set(ctx, "k", 1, time.Millisecond))
	waitSignal(t, m.SweptChanged, func() bool { return rowCount(t, db.Pool, "app", "") == 0 }, "the sweeper deletes the expired row")
}

func TestMaxEntriesEvictsOldestFirst(t *testing.T) {
	_, m, c := openCache(t, &pgcache.ManagerConfig{AppName: "app", SweepBatchSize: 2}, pgcache.CacheConfig{MaxEntries: 5})
	ctx := context.Background()
	unbounded := newCache(t, m, pgcache.CacheConfig{Name: "u"})
	for i := range 12 {
		require.NoError(t, c.Set(ctx, string(rune('a'+i)), i, 0))
		require.NoError(t, unbounded.Set(ctx, string(rune('a'+i)), i, 0))
	}
	require.NoError(t, m.Sweep(ctx))
	keys, err := c.Keys(ctx, "*")
	require.NoError(t, err)
	require.Equal(t, []string{"h", "i", "j", "k", "l"}, keys)
	require.EqualValues(t, 7, c.Stats().Evictions)
	keys, err = unbounded.Keys(ctx, "*")
	require.NoError(t, err)
	require.Len(t, keys, 12)
}

// The memory store holds MaxEntries when Set and MSet return, evicting the
// least recently used entry (NocoBase's lru-cache); before, eviction ran later
// on a background goroutine and an immediate read saw every entry.
func TestMemoryStoreBounded(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	m := newManager(t, db.Pool, &pgcache.ManagerConfig{DefaultStore: pgcache.StoreMemory})
	ctx := context.Background()

	c := newCache(t, m, pgcache.CacheConfig{Name: "two", MaxEntries: 2})
	require.Equal(t, pgcache.StoreMemory, c.Store())
	for _, k := range []string{"a", "b", "c"} {
		require.NoError(t, c.Set(ctx, k, k, 0))
	}
	keys, err := c.Keys(ctx, "*")
	require.NoError(t, err)
	require.Equal(t, []string{"b", "c"}, keys, "bound held when Set returned; the oldest went")
	require.EqualValues(t, 1, c.Stats().Evictions)

	// Least recently used, not least recently written: reading b keeps it.
	_, ok, err := c.Get(ctx, "b")
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, c.Set(ctx, "d", "d", 0))
	keys, err = c.Keys(ctx, "*")
	require.NoError(t, err)
	require.Equal(t, []string{"b", "d"}, keys)

	// MSet beyond the bound keeps its last items.
	require.NoError(t, c.MSet(ctx, []pgcache.Item{{Key: "x", Value: 1}, {Key: "y", Value: 2}, {Key: "z", Value: 3}}, 0))
	keys, err = c.Keys(ctx, "*")
	require.NoError(t, err)
	require.Equal(t, []string{"y", "z"}, keys)

	// Concurrent writers: the bound holds whenever any of them returns.
	big := newCache(t, m, pgcache.CacheConfig{Name: "big", MaxEntries: 50})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 100 {
				assert.NoError(t, big.Set(ctx, fmt.Sprintf("k%d-%d", w, i), i, 0))
				keys, err := big.Keys(ctx, "*")
				assert.NoError(t, err)
				assert.LessOrEqual(t, len(keys), 50)
			}
		})
	}
	wg.Wait()
	keys, err = big.Keys(ctx, "*")
	require.NoError(t, err)
	require.Len(t, keys, 50)
	require.EqualValues(t, 800-50, big.Stats().Evictions)
	require.Equal(t, 0, rowCount(t, db.Pool, pgcache.DefaultAppName, ""), "memory store writes nothing to PostgreSQL")
}

func TestLargeAndBadValues(t *testing.T) {
	ctx := context.Background()
	perStoreOf(t, nil, pgcache.CacheConfig{MaxValueBytes: 2 << 20}, func(t *testing.T, m *pgcache.Manager, c *pgcache.Cache) {
		big := strings.Repeat("x", 1<<20)
		require.NoError(t, c.Set(ctx, "big", big, 0))
		got, ok, err := pgcache.Get[string](ctx, c, "big")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, big, got)
		blob := make([]byte, 1<<20)
		for i := range blob {
			blob[i] = byte(i)
		}
		require.NoError(t, c.Set(ctx, "blob", blob, 0))
		gotBlob, _, err := pgcache.Get[[]byte](ctx, c, "blob")
		require.NoError(t, err)
		require.Equal(t, blob, gotBlob)

		err = c.Set(ctx, "huge", make([]byte, 3<<20), 0)
		require.ErrorIs(t, err, pgcache.ErrValueTooLarge)
		for name, v := range map[string]any{"chan": make(chan int), "func": func() {}, "inf": math.Inf(1), "nil": nil, "nilmap": map[string]int(nil), "nilbytes": []byte(nil)} {
			err := c.Set(ctx, "bad", v, 0)
			require.ErrorIs(t, err, pgcache.ErrNotCacheable, name)
		}
		for _, k := range []string{"huge", "bad"} {
			_, ok, err := c.Get(ctx, k)
			require.NoError(t, err)
			require.False(t, ok, "nothing written for %s", k)
		}

		require.ErrorIs(t, c.Set(ctx, "", 1, 0), pgcache.ErrEmptyKey)
		_, _, err = c.Get(ctx, "")
		require.ErrorIs(t, err, pgcache.ErrEmptyKey)
		require.ErrorIs(t, c.Del(ctx, ""), pgcache.ErrEmptyKey)
		require.ErrorIs(t, c.Set(ctx, "nul\x00", 1, 0), pgcache.ErrInvalidKey)
		require.ErrorIs(t, c.Set(ctx, string([]byte{0xff}), 1, 0), pgcache.ErrInvalidKey)
		require.ErrorIs(t, c.Set(ctx, strings.Repeat("k", pgcache.MaxKeyBytes+1), 1, 0), pgcache.ErrInvalidKey)

		// Unicode and quotes are ordinary keys.
		require.NoError(t, c.Set(ctx, `ключ'"; DROP TABLE x;--`, "ok", 0))
		v, ok, err := c.Get(ctx, `ключ'"; DROP TABLE x;--`)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, "ok", v)

		cctx, cancel := context.WithCancel(ctx)
		cancel()
		require.ErrorIs(t, c.Set(cctx, "cancelled", 1, 0), context.Canceled)
		_, ok, err = c.Get(ctx, "cancelled")
		require.NoError(t, err)
		require.False(t, ok)
	})
}

func TestTxForms(t *testing.T) {
	db, m, c := openCache(t, nil, pgcache.CacheConfig{Name: "pg"})
	ctx := context.Background()

	// Plain pgx.Tx: visible only after commit, gone on rollback.
	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, c.SetTx(ctx, tx, "k", "v", 0))
	_, ok, err := c.Get(ctx, "k")
	require.NoError(t, err)
	require.False(t, ok, "not visible before commit")
	require.NoError(t, tx.Commit(ctx))
	v, ok, err := c.Get(ctx, "k")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "v", v)

	tx, err = db.Pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, c.SetTx(ctx, tx, "rolled", "v", 0))
	require.NoError(t, c.DelTx(ctx, tx, "k"))
	require.NoError(t, tx.Rollback(ctx))
	_, ok, err = c.Get(ctx, "rolled")
	require.NoError(t, err)
	require.False(t, ok)
	_, ok, err = c.Get(ctx, "k")
	require.NoError(t, err)
	require.True(t, ok, "DelTx rolled back")

	require.NoError(t, txhooks.Run(ctx, db.Pool, func(ctx context.Context, tx *txhooks.Tx) error {
		return c.DelTx(ctx, tx, "k")
	}))
	_, ok, err = c.Get(ctx, "k")
	require.NoError(t, err)
	require.False(t, ok)

	// Memory store: applied by the after-commit hook of a *txhooks.Tx only.
	mem := newCache(t, m, pgcache.CacheConfig{Name: "mem", Store: pgcache.StoreMemory})
	htx, err := txhooks.Begin(ctx, db.Pool)
	require.NoError(t, err)
	require.NoError(t, mem.SetTx(ctx, htx, "k", 1, 0))
	_, ok, err = mem.Get(ctx, "k")
	require.NoError(t, err)
	require.False(t, ok)
	require.NoError(t, htx.Commit(ctx))
	_, ok, err = mem.Get(ctx, "k")
	require.NoError(t, err)
	require.True(t, ok)

	htx, err = txhooks.Begin(ctx, db.Pool)
	require.NoError(t, err)
	require.NoError(t, mem.DelTx(ctx, htx, "k"))
	require.NoError(t, htx.Rollback(ctx))
	_, ok, err = mem.Get(ctx, "k")
	require.NoError(t, err)
	require.True(t, ok)

	ptx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	require.ErrorIs(t, mem.SetTx(ctx, ptx, "k", 1, 0), pgcache.ErrTxUnsupported)
	require.NoError(t, ptx.Rollback(ctx))
}

// NocoBase cache-manager.test.ts and the stricter name rules.
func TestManager(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	m, err := pgcache.NewManager(db.Pool, &pgcache.ManagerConfig{AppName: "app"})
	require.NoError(t, err)

	c, err := m.CreateCache(ctx, pgcache.CacheConfig{Name: "test", Store: pgcache.StoreMemory})
	require.NoError(t, err)
	require.Equal(t, "test", c.Name())
	got, err := m.Cache("test")
	require.NoError(t, err)
	require.Same(t, c, got)

	c2, err := m.CreateCache(ctx, pgcache.CacheConfig{Name: "ttl", TTL: 100 * time.Millisecond})
	require.NoError(t, err)
	require.Equal(t, pgcache.StorePostgres, c2.Store())

	again, err := m.CreateCache(ctx, pgcache.CacheConfig{Name: "test", Store: pgcache.StoreMemory})
	require.NoError(t, err)
	require.Same(t, c, again, "same name and config returns the live cache")
	_, err = m.CreateCache(ctx, pgcache.CacheConfig{Name: "test", Store: pgcache.StorePostgres})
	require.ErrorIs(t, err, pgcache.ErrCacheExists)
	got, err = m.Cache("test")
	require.NoError(t, err)
	require.Same(t, c, got, "never silently replaced")

	_, err = m.Cache("nope")
	var nf *pgcache.CacheNotFoundError
	require.ErrorAs(t, err, &nf)
	require.Equal(t, "nope", nf.Name)

	_, err = m.CreateCache(ctx, pgcache.CacheConfig{Name: "x", Store: "redis"})
	require.ErrorIs(t, err, pgcache.ErrUnknownStore)
	_, err = m.CreateCache(ctx, pgcache.CacheConfig{})
	require.Error(t, err)
	_, err = m.CreateCache(ctx, pgcache.CacheConfig{Name: "n", NearCache: true})
	require.ErrorIs(t, err, pgcache.ErrNearCacheNeedsPubSub)

	_, err = pgcache.NewManager(db.Pool, &pgcache.ManagerConfig{Schema: "Bad-Schema"})
	require.ErrorIs(t, err, migrationsErrInvalidSchema())
	_, err = pgcache.NewManager(db.Pool, &pgcache.ManagerConfig{DefaultStore: "redis"})
	require.ErrorIs(t, err, pgcache.ErrUnknownStore)

	require.NoError(t, c2.Set(ctx, "k", 1, 0))
	require.NoError(t, m.Close(ctx))
	require.NoError(t, m.Close(ctx), "Close twice is fine")
	require.ErrorIs(t, c2.Set(ctx, "k", 1, 0), pgcache.ErrClosed)
	_, _, err = c2.Get(ctx, "k")
	require.ErrorIs(t, err, pgcache.ErrClosed)
	_, err = m.CreateCache(ctx, pgcache.CacheConfig{Name: "late"})
	require.ErrorIs(t, err, pgcache.ErrClosed)
	_, err = m.Cache("test")
	require.ErrorIs(t, err, pgcache.ErrClosed)
	require.ErrorIs(t, m.Start(ctx), pgcache.ErrClosed)
	require.ErrorIs(t, m.FlushAll(ctx), pgcache.ErrClosed)
	_, err = c2.Counter().Incr(ctx, "n")
	require.ErrorIs(t, err, pgcache.ErrClosed)
	require.Equal(t, 1, rowCount(t, db.Pool, "app", ""), "Close keeps entries")
}

// ClusterSingleFlight Wraps hold no pool connection while their loaders
// run: as many concurrent Wraps on different keys as the pool has
// connections, each loader reading through that pool, all complete. Before,
// each Wrap kept its advisory-lock transaction's connection and every
// loader waited for a connection until its context ended.
func TestWrapClusterSingleFlightDoesNotStarvePool(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	const conns = 4
	pool := db.NewPool(t, &pgtest.PoolOptions{AppName: "starve", MaxConns: conns})
	m := newManager(t, pool, &pgcache.ManagerConfig{AppName: "app"})
	c := newCache(t, m, pgcache.CacheConfig{Name: "c", ClusterSingleFlight: true})
	// Same prefix, second cache: still one loader per key on this manager.
	twin := newCache(t, m, pgcache.CacheConfig{Name: "twin", Prefix: "c", ClusterSingleFlight: true})

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var (
		started = make(chan struct{}, conns)
		all     = make(chan struct{})
		calls   atomic.Int32
	)
	go func() {
		for range conns {
			<-started
		}
		close(all)
	}()
	load := func(key string) func(ctx context.Context) (string, error) {
		return func(ctx context.Context) (string, error) {
			if calls.Add(1) <= conns {
				started <- struct{}{}
			}
			// Every loader runs at once, then reads through the same pool.
			select {
			case <-all:
			case <-ctx.Done():
				return "", ctx.Err()
			}
			var v string
			err := pool.QueryRow(ctx, `SELECT 'loaded-' || $1::text`, key).Scan(&v)
			return v, err
		}
	}
	var wg sync.WaitGroup
	for i := range conns {
		key := fmt.Sprintf("k%d", i)
		for _, cc := range []*pgcache.Cache{c, twin} {
			wg.Go(func() {
				v, err := pgcache.Wrap(ctx, cc, key, load(key), 0)
				assert.NoError(t, err)
				assert.Equal(t, "loaded-"+key, v)
			})
		}
	}
	wg.Wait()
	require.EqualValues(t, conns, calls.Load(), "one loader per key")
}
