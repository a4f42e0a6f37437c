package listen

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// insertBacklog writes n messages of app "app" on channel "backlog" in one
// statement (no notification): the log a busy cluster leaves behind.
func insertBacklog(t *testing.T, db *pgtest.DB, n int) {
	t.Helper()
	_, err := db.Pool.Exec(context.Background(), `INSERT INTO `+db.Schema+`.messages (app, channel, sender, payload)
		SELECT 'app', 'backlog', 'elsewhere', json_build_object('n', i) FROM generate_series(1, $1) i`, n)
	require.NoError(t, err)
}

// TestLongTransactionBigBacklog: a transaction holding an xid stays open
// (xmin pinned) while a big log accumulates behind it, before and after
// Start. Reading the log must not cost what was published since that xmin:
// with a statement budget that a read of the whole backlog cannot meet,
// Start succeeds, the backlog is paged through once, and fresh messages
// (inline and by wake-up) are delivered.
func TestLongTransactionBigBacklog(t *testing.T) {
	ctx, db := setup(t)
	pin, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pin.Rollback(context.Background()) })
	var pinned uint64
	require.NoError(t, pin.QueryRow(ctx, `SELECT pg_current_xact_id()`).Scan(&pinned))

	const backlog = 300_000
	insertBacklog(t, db, backlog) // before Start: never delivered
	pub := started(t, db, "inst-pub", nil)
	sub := instance(t, db, "inst-sub", nil)
	sub.readTimeout = 300 * time.Millisecond // the whole backlog does not fit in one statement
	got := subscribe(t, sub, "ch", nil)
	require.NoError(t, sub.Start(ctx))

	insertBacklog(t, db, 5000) // after Start: read once, in pages
	require.NoError(t, pub.Publish(ctx, "ch", "inline", nil))
	tx, err := pub.pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, pub.PublishTx(ctx, tx, "ch", "by-wake-up", nil))
	require.NoError(t, tx.Commit(ctx))
	got.waitPayload(t, `"inline"`)
	got.waitPayload(t, `"by-wake-up"`)

	// Later polls read only what is new: the ledger keeps no id per message
	// of the backlog, and messages keep flowing.
	waitState(t, sub, waitFor, func() bool { return sub.Healthy() && sub.led.size() < 1000 })
	barrier(t, pub, got, "ch")
	require.Equal(t, []string{`"inline"`, `"by-wake-up"`}, got.nonBarrier())
	require.False(t, sub.led.snapEnded(pinned), "the pinned transaction is still open")
}
