package bench

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
)

func TestQueueSuiteRows(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ops := 200
	// PGCOORD_BENCH_QUEUE_OPS=20000 runs the realistic size.
	if v, err := strconv.Atoi(os.Getenv("PGCOORD_BENCH_QUEUE_OPS")); err == nil && v > 0 {
		ops = v
		cancel()
		ctx, cancel = context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
	}
	var suite Suite = Queue
	rows, err := suite(ctx, db.Pool, Options{Ops: ops, Schema: db.Schema})
	require.NoError(t, err)
	names := map[string]bool{}
	for _, r := range rows {
		names[r.Name] = true
		require.Equal(t, "river", r.BaselineName)
		require.Contains(t, []string{"us", "ops/s"}, r.Unit)
		require.Positive(t, r.Pgcoord, r.Name)
		require.Positive(t, r.Baseline, r.Name)
		require.Positive(t, r.CostRatio, r.Name)
		t.Logf("%-28s pgcoord %12.1f %-5s river %12.1f  cost ratio %.2f", r.Name, r.Pgcoord, r.Unit, r.Baseline, r.CostRatio)
	}
	for _, want := range []string{"queue.throughput", "queue.latency_p50", "queue.latency_p99", "queue.throughput_defaults", "queue.latency_p50_defaults"} {
		require.True(t, names[want], want)
	}
}
