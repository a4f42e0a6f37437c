package bench

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
)

func TestCacheSuiteRows(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var suite Suite = Cache
	rows, err := suite(ctx, db.Pool, Options{Ops: 100, Schema: db.Schema})
	require.NoError(t, err)
	names := map[string]bool{}
	for _, r := range rows {
		names[r.Name] = true
		require.Equal(t, "us", r.Unit, r.Name)
		require.NotEmpty(t, r.BaselineName, r.Name)
		require.Positive(t, r.Pgcoord, r.Name)
		require.Positive(t, r.Baseline, r.Name)
		require.Positive(t, r.CostRatio, r.Name)
		t.Logf("%-20s pgcoord %10.1f us  %-28s %10.1f us  cost ratio %.3f", r.Name, r.Pgcoord, r.BaselineName, r.Baseline, r.CostRatio)
	}
	for _, want := range []string{"cache.get.c1", "cache.get.c8", "cache.set.c1", "cache.mget100.c1", "cache.mget100_bytes.c1", "cache.near_set.c1", "cache.near_hit.c1", "cache.near_hit_bytes.c1"} {
		require.True(t, names[want], want)
	}
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pgcoord.cache_entries`).Scan(&n))
	require.Zero(t, n, "the suite cleans up")
}
