package listen

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRetentionCountsFromCommit: a PublishTx in a transaction that stays
// open longer than Retention, committed while a listener is connected, must
// not be pruned before that listener has read it, while a message committed
// before the pruner's marker is pruned once that marker is older than
// Retention.
func TestRetentionCountsFromCommit(t *testing.T) {
	ctx, db := setup(t)
	const retention = 200 * time.Millisecond
	pub := started(t, db, "inst-pub", &Config{Retention: retention, PruneInterval: -1})
	sub := instance(t, db, "inst-sub", &Config{Retention: retention, PruneInterval: -1})
	got := subscribe(t, sub, "ch", nil)
	l := newListener(sub) // the test plays the started listener, to order its read after the prune
	conn, _, err := l.connect(ctx, true, nil)
	require.NoError(t, err)
	defer conn.Close(ctx) //nolint:errcheck

	require.NoError(t, pub.Publish(ctx, "other", "committed-before-the-marker", nil))
	tx, err := pub.pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	require.NoError(t, pub.PublishTx(ctx, tx, "ch", "slow", nil))
	n, err := pub.prune(ctx) // writes a marker while tx is open
	require.NoError(t, err)
	require.Zero(t, n)
	require.Eventually(t, func() bool { // the transaction and the marker are now older than Retention
		var older bool
		return db.Pool.QueryRow(ctx, `SELECT clock_timestamp() > max(published_at) + $1::interval FROM pgcoord.messages`, retention).Scan(&older) == nil && older
	}, waitFor, tick)
	require.NoError(t, tx.Commit(ctx))

	n, err = pub.prune(ctx) // the pruner runs before the listener reads
	require.NoError(t, err)
	require.Equal(t, int64(1), n, "only the message committed before the marker is pruned")
	readLog(t, l, conn)
	got.waitPayload(t, `"slow"`)
	require.Zero(t, sub.Stats().Lost)
}
