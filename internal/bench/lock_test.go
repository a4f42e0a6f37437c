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

func TestLockSuiteRows(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var suite Suite = Lock
	ops := 64
	// PGCOORD_BENCH_LOCK_OPS=2000 measures at a realistic size (go test -v -run TestLockSuiteRows).
	if n, err := strconv.Atoi(os.Getenv("PGCOORD_BENCH_LOCK_OPS")); err == nil && n > 0 {
		ops = n
	}
	rows, err := suite(ctx, db.Pool, Options{Ops: ops, Schema: db.Schema})
	require.NoError(t, err)
	want := map[string]string{"lock.uncontended.c1": "us", "lock.handoff.c8": "ops/s"}
	for _, i := range []string{"i8", "i32"} {
		want["lock.handoff."+i] = "ops/s"
		want["lock.handoff_max_wait."+i] = "us"
		want["lock.handoff_min_share."+i] = "share"
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
		t.Logf("%-20s pgcoord %10.1f %-5s %-45s %10.1f  cost ratio %.3f", r.Name, r.Pgcoord, r.Unit, r.BaselineName, r.Baseline, r.CostRatio)
	}
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pgcoord.locks`).Scan(&n))
	require.Zero(t, n, "the suite cleans up")
}
