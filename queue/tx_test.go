package queue_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/queue"
	"github.com/pgcoord/pgcoord/txhooks"
)

// PublishTx: invisible until commit, processed after it; gone on rollback
// and never processed. Both with a *txhooks.Tx and a plain pgx.Tx.
func TestPublishTxCommitAndRollback(t *testing.T) {
	db, q := openQueue(t)
	var calls atomic.Int32
	seen := make(chan string, 10)
	require.NoError(t, q.Subscribe(ctxT(t), "test1", queue.Consumer{Concurrency: 1, Process: func(_ context.Context, m queue.Message) error {
		calls.Add(1)
		seen <- string(m.Payload)
		return nil
	}}))
	start(t, q)
	ctx := ctxT(t)

	for _, wrap := range []bool{true, false} {
		// Rollback: never stored, never processed.
		tx, err := db.Pool.Begin(ctx)
		require.NoError(t, err)
		var ptx pgx.Tx = tx
		if wrap {
			ptx = txhooks.Wrap(tx)
		}
		_, err = q.PublishTx(ctx, ptx, "test1", "rolled back", nil)
		require.NoError(t, err)
		_, err = q.PublishManyTx(ctx, ptx, []queue.Publication{{Channel: "test1", Payload: "rolled back too"}})
		require.NoError(t, err)
		require.NoError(t, ptx.Rollback(ctx))

		// Commit: invisible before, processed after.
		tx, err = db.Pool.Begin(ctx)
		require.NoError(t, err)
		ptx = tx
		if wrap {
			ptx = txhooks.Wrap(tx)
		}
		id, err := q.PublishTx(ctx, ptx, "test1", "committed", nil)
		require.NoError(t, err)
		var visible int
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pgcoord.river_job WHERE id = $1`, id).Scan(&visible))
		require.Equal(t, 0, visible)
		require.NoError(t, ptx.Commit(ctx))
		require.Equal(t, `"committed"`, <-seen)
		waitState(t, db, id, "completed")
	}
	require.Equal(t, int32(2), calls.Load())
	require.Equal(t, 2, countJobs(t, db))
}
