package listen

import (
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/faultproxy"
)

// TestSilentPartition: the listener's connection goes quiet (no RST reaches
// either side). The next read of the log misses its statement budget, the
// listener reconnects, and what was published meanwhile is delivered once.
func TestSilentPartition(t *testing.T) {
	ctx, db := setup(t)
	proxy, url := faultproxy.StartFor(t, db.URL)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	sub := psOn(t, pool, "sub")
	sub.readTimeout = 2 * queryTimeout / 10 // the partition is noticed within 2 s
	got := subscribe(t, sub, "ch", nil)
	require.NoError(t, sub.Start(ctx))
	pub := started(t, db, "inst-pub", nil)
	barrier(t, pub, got, "ch")

	require.NotZero(t, proxy.Freeze())
	require.NoError(t, pub.Publish(ctx, "ch", "during", nil))
	waitState(t, sub, waitFor, func() bool { return sub.Stats().Reconnects >= 1 && sub.Healthy() })
	got.waitPayload(t, `"during"`)
	barrier(t, pub, got, "ch")
	require.Equal(t, []string{`"during"`}, got.nonBarrier())
	proxy.Thaw()
}
