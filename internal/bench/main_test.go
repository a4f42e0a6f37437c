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

func TestMain(m *testing.M) { pgtest.Main(m) }

// runSuite runs suite on a fresh database with ops operations (or the value
// of the environment variable env, to measure at a realistic size with
// go test -v -run), checks that it returned exactly the rows of want (name →
// unit), each with both figures and a ratio, logs them, and checks that the
// suite deleted what it wrote to table.
func runSuite(t *testing.T, suite Suite, ops int, env, table string, want map[string]string) {
	t.Helper()
	db := pgtest.NewDB(t)
	timeout := 2 * time.Minute
	if n, err := strconv.Atoi(os.Getenv(env)); err == nil && n > 0 {
		ops, timeout = n, 10*time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	rows, err := suite(ctx, db.Pool, Options{Ops: ops, Schema: db.Schema})
	require.NoError(t, err)
	require.Len(t, rows, len(want))
	for _, r := range rows {
		unit, ok := want[r.Name]
		require.True(t, ok, r.Name)
		require.Equal(t, unit, r.Unit, r.Name)
		require.NotEmpty(t, r.BaselineName, r.Name)
		require.Positive(t, r.Pgcoord, r.Name)
		require.Positive(t, r.Baseline, r.Name)
		require.Positive(t, r.CostRatio, r.Name)
		t.Logf("%-28s pgcoord %12.1f %-5s %-50s %12.1f  cost ratio %.3f", r.Name, r.Pgcoord, r.Unit, r.BaselineName, r.Baseline, r.CostRatio)
	}
	if table != "" {
		var n int
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pgcoord.`+table).Scan(&n))
		require.Zero(t, n, "the suite cleans up")
	}
}
