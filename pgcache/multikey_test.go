package pgcache_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/pgcache"
)

// Multi-key writes lock rows in one canonical order, so concurrent MSet,
// MDel and Reset calls over overlapping keys given in opposite orders never
// deadlock (SQLSTATE 40P01); before, two MSets failed within a few rounds.
func TestMultiKeyWritesDoNotDeadlock(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	const nkeys, rounds = 200, 15
	var asc []string
	for i := range nkeys {
		asc = append(asc, fmt.Sprintf("k%03d", i))
	}
	desc := slices.Clone(asc)
	slices.Reverse(desc)
	items := func(keys []string, v int) []pgcache.Item {
		out := make([]pgcache.Item, len(keys))
		for i, k := range keys {
			out[i] = pgcache.Item{Key: k, Value: v}
		}
		return out
	}
	type writer func(ctx context.Context, c *pgcache.Cache, round int) error
	msetAsc := func(ctx context.Context, c *pgcache.Cache, r int) error { return c.MSet(ctx, items(asc, r), 0) }
	msetDesc := func(ctx context.Context, c *pgcache.Cache, r int) error { return c.MSet(ctx, items(desc, r), 0) }
	mdelDesc := func(ctx context.Context, c *pgcache.Cache, r int) error { return c.MDel(ctx, desc...) }
	reset := func(ctx context.Context, c *pgcache.Cache, r int) error { return c.Reset(ctx) }
	for _, tc := range []struct {
		name string
		a, b writer
	}{
		{"mset-mset", msetAsc, msetDesc},
		{"mset-mdel", msetDesc, mdelDesc},
		{"mset-reset", msetDesc, reset},
		{"mset-reset-asc", msetAsc, reset},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Two instances (pools) writing one cache's rows.
			var caches []*pgcache.Cache
			for _, inst := range []string{"a", "b"} {
				pool := db.NewPool(t, &pgtest.PoolOptions{AppName: tc.name + "-" + inst, MaxConns: 2})
				m := newManager(t, pool, &pgcache.ManagerConfig{AppName: tc.name})
				caches = append(caches, newCache(t, m, pgcache.CacheConfig{Name: "c"}))
			}
			require.NoError(t, caches[0].MSet(ctx, items(asc, -1), 0))
			var g errgroup.Group
			for i, w := range []writer{tc.a, tc.b} {
				g.Go(func() error {
					for r := range rounds {
						if err := w(ctx, caches[i], r); err != nil {
							return err
						}
					}
					return nil
				})
			}
			require.NoError(t, g.Wait())
		})
	}
}
