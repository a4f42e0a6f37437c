package pgcache_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
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

// MGet reads values from the wire bytes of its rows: the same values in
// every pgx query mode, binary (the extended protocol) and text (the simple
// protocol), with a key asked for twice and a missing one.
func TestMGetEveryQueryExecMode(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	raw := []byte{0, '\\', 'x', 0xff, '"', '{'}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe,
		pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			cfg := db.PoolConfig(t, nil)
			cfg.ConnConfig.DefaultQueryExecMode = mode
			pool, err := pgxpool.NewWithConfig(ctx, cfg)
			require.NoError(t, err)
			t.Cleanup(pool.Close)
			m := newManager(t, pool, &pgcache.ManagerConfig{AppName: "app-" + mode.String()})
			c := newCache(t, m, pgcache.CacheConfig{Name: "c"})
			type user struct {
				ID   int64  `json:"id"`
				Name string `json:"name"`
			}
			require.NoError(t, c.MSet(ctx, []pgcache.Item{
				{Key: "u1", Value: user{ID: 1<<53 + 1, Name: "ann"}}, {Key: "u2", Value: user{ID: 2, Name: "bo\\b"}},
				{Key: "raw", Value: raw},
			}, 0))

			users, err := pgcache.MGet[user](ctx, c, "u2", "nope", "u1", "u2")
			require.NoError(t, err)
			require.Equal(t, []*user{{ID: 2, Name: "bo\\b"}, nil, {ID: 1<<53 + 1, Name: "ann"}, {ID: 2, Name: "bo\\b"}}, users)

			bs, err := pgcache.MGet[[]byte](ctx, c, "raw", "u2", "nope")
			require.NoError(t, err)
			require.Equal(t, []*[]byte{&raw, ptr([]byte(`{"id":2,"name":"bo\\b"}`)), nil}, bs)

			vals, err := c.MGet(ctx, "raw", "u1", "nope", "raw")
			require.NoError(t, err)
			require.Equal(t, []any{raw, map[string]any{"id": json.Number("9007199254740993"), "name": "ann"}, nil, raw}, vals)

			_, err = pgcache.MGet[user](ctx, c, "u1", "raw")
			require.ErrorContains(t, err, "raw bytes")
		})
	}
}

func ptr[T any](v T) *T { return &v }
