package pgcache_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/pgcache"
)

// The untyped Wrap and WrapWithCondition return one shape whether the value
// was cached or loaded: the value as Get reads it back. Before, a miss
// returned the loader's Go value and a hit a decoded map with float64s.
func TestWrapResultShapeSameOnHitAndMiss(t *testing.T) {
	type user struct {
		ID   int    `json:"id"`
		Name string `json:"name"`
	}
	load := func(context.Context) (any, error) { return user{ID: 7, Name: "ann"}, nil }
	want := map[string]any{"id": json.Number("7"), "name": "ann"}
	perStore(t, pgcache.CacheConfig{}, func(t *testing.T, c *pgcache.Cache) {
		ctx := t.Context()
		for i := range 2 {
			v, err := c.Wrap(ctx, "wrap", load, 0)
			require.NoError(t, err)
			require.Equal(t, want, v, "call %d", i)
			v, err = c.WrapWithCondition(ctx, "cond", load, nil)
			require.NoError(t, err)
			require.Equal(t, want, v, "call %d", i)
		}
		// Bypassing the cache gives the same shape too.
		v, err := c.WrapWithCondition(ctx, "cond", load, &pgcache.WrapOpts{BypassCache: true})
		require.NoError(t, err)
		require.Equal(t, want, v)

		// The typed forms give the loader's type on a hit and a miss.
		typed := func(context.Context) (user, error) { return user{ID: 8, Name: "bob"}, nil }
		for range 2 {
			u, err := pgcache.Wrap(ctx, c, "typed", typed, 0)
			require.NoError(t, err)
			require.Equal(t, user{ID: 8, Name: "bob"}, u)
			u, err = pgcache.WrapWithCondition(ctx, c, "typed-cond", typed, nil)
			require.NoError(t, err)
			require.Equal(t, user{ID: 8, Name: "bob"}, u)
		}
		require.NoError(t, c.Set(ctx, "obj", map[string]any{"u": user{ID: 9, Name: "cy"}}, 0))
		u, ok, err := pgcache.GetValueInObject[user](ctx, c, "obj", "u")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, user{ID: 9, Name: "cy"}, u)
		_, ok, err = pgcache.GetValueInObject[user](ctx, c, "obj", "missing")
		require.NoError(t, err)
		require.False(t, ok)
	})
}

// Untyped reads decode numbers as json.Number: an integer above 2^53 comes
// back exactly (as float64 it was rounded), and writing it back stores it
// unchanged.
func TestUntypedReadsKeepLargeIntegers(t *testing.T) {
	const big = int64(1)<<53 + 1
	perStore(t, pgcache.CacheConfig{}, func(t *testing.T, c *pgcache.Cache) {
		ctx := t.Context()
		require.NoError(t, c.Set(ctx, "n", big, 0))
		require.NoError(t, c.Set(ctx, "obj", map[string]int64{"n": big}, 0))
		v, ok, err := c.Get(ctx, "n")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, json.Number("9007199254740993"), v)
		vs, err := c.MGet(ctx, "n", "obj")
		require.NoError(t, err)
		require.Equal(t, []any{json.Number("9007199254740993"), map[string]any{"n": json.Number("9007199254740993")}}, vs)
		f, ok, err := c.GetValueInObject(ctx, "obj", "n")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, json.Number("9007199254740993"), f)

		require.NoError(t, c.Set(ctx, "copy", v, 0))
		n, _, err := pgcache.Get[int64](ctx, c, "copy")
		require.NoError(t, err)
		require.Equal(t, big, n, "a value read untyped and written back is unchanged")
	})
}

// A nil result (Wrap[*T] returning nil, nil: "not found") is returned as it
// is, without an error, and not stored: the loader runs again next time.
// Negative caching takes a non-nil value that records the absence.
func TestWrapNilResult(t *testing.T) {
	perStore(t, pgcache.CacheConfig{}, func(t *testing.T, c *pgcache.Cache) {
		ctx := t.Context()
		calls := 0
		load := func(context.Context) (*int, error) { calls++; return nil, nil }
		for range 2 {
			v, err := pgcache.Wrap(ctx, c, "nilptr", load, 0)
			require.NoError(t, err)
			require.Nil(t, v)
			u, err := c.Wrap(ctx, "nil", func(context.Context) (any, error) { return nil, nil }, 0)
			require.NoError(t, err)
			require.Nil(t, u)
		}
		require.Equal(t, 2, calls, "a nil result is not cached")
		_, ok, err := c.Get(ctx, "nilptr")
		require.NoError(t, err)
		require.False(t, ok)

		// Negative caching: a value that says "absent".
		type lookup struct {
			Found bool `json:"found"`
			N     int  `json:"n,omitempty"`
		}
		calls = 0
		neg := func(context.Context) (lookup, error) { calls++; return lookup{}, nil }
		for range 2 {
			v, err := pgcache.Wrap(ctx, c, "neg", neg, 0)
			require.NoError(t, err)
			require.False(t, v.Found)
		}
		require.Equal(t, 1, calls)
	})
}

// WrapWithCondition reads back what it agreed to store: with IsCacheable, a
// cached value is a hit when IsCacheable accepts it, so a cacheable 0 is
// cached. Without IsCacheable, NocoBase's rule: truthy values only, both ways.
func TestWrapWithConditionCachesWhatIsCacheableAccepts(t *testing.T) {
	perStore(t, pgcache.CacheConfig{}, func(t *testing.T, c *pgcache.Cache) {
		ctx := t.Context()
		calls := 0
		zero := func(context.Context) (int, error) { calls++; return 0, nil }
		always := &pgcache.WrapOpts{IsCacheable: func(any) bool { return true }}
		for range 3 {
			v, err := pgcache.WrapWithCondition(ctx, c, "zero", zero, always)
			require.NoError(t, err)
			require.Equal(t, 0, v)
		}
		require.Equal(t, 1, calls, "0 is cached when IsCacheable accepts it")

		calls = 0
		for range 2 {
			_, err := pgcache.WrapWithCondition(ctx, c, "zero-default", zero, nil)
			require.NoError(t, err)
		}
		require.Equal(t, 2, calls, "without IsCacheable falsy results are not cached (NocoBase)")
	})
}
