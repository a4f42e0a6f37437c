package bench

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
)

func TestListenSuiteRows(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var suite Suite = Listen
	rows, err := suite(ctx, db.Pool, Options{Ops: 64, Schema: db.Schema})
	require.NoError(t, err)
	want := map[string]string{
		"listen.deliver_p50.c1": "us", "listen.deliver_p99.c1": "us",
		"listen.deliver_p50.c8": "us", "listen.deliver_p99.c8": "us",
		"listen.throughput.c1": "ops/s", "listen.throughput.c8": "ops/s",
		"listen.wakeups.c8": "reads",
	}
	require.Len(t, rows, len(want))
	for _, r := range rows {
		unit, ok := want[r.Name]
		require.True(t, ok, r.Name)
		require.Equal(t, unit, r.Unit, r.Name)
		require.NotEmpty(t, r.BaselineName, r.Name)
		require.Positive(t, r.Pgcoord, r.Name)
		require.Positive(t, r.Baseline, r.Name)
		require.Positive(t, r.CostRatio, r.Name)
		t.Logf("%-22s pgcoord %10.1f %-5s %-42s %10.1f  cost ratio %.3f", r.Name, r.Pgcoord, r.Unit, r.BaselineName, r.Baseline, r.CostRatio)
	}
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pgcoord.messages`).Scan(&n))
	require.Zero(t, n, "the suite cleans up")
}
