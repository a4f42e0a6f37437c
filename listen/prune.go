package listen

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// pruneBatch bounds the rows one pruning statement deletes.
const pruneBatch = 5000

// pruneLoop deletes messages older than Retention every PruneInterval.
func (ps *PubSub) pruneLoop() {
	t := time.NewTicker(ps.cfg.PruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ps.ctx.Done():
			return
		case <-t.C:
		}
		if _, err := ps.prune(ps.ctx); err != nil && ps.ctx.Err() == nil {
			ps.logger.Warn("listen: pruning the messages log failed", slog.String("app", ps.cfg.AppName), slog.Any("error", err))
		}
	}
}

// prune deletes this app's messages older than Retention in bounded batches,
// each in a transaction holding a transaction-scoped advisory lock, so one
// instance of the app prunes at a time and the others skip. It returns the
// number of rows deleted.
func (ps *PubSub) prune(ctx context.Context) (int64, error) {
	var total int64
	for range 100 {
		n, locked, err := ps.pruneOnce(ctx)
		total += n
		if err != nil || !locked || n < pruneBatch {
			return total, err
		}
	}
	return total, nil
}

func (ps *PubSub) pruneOnce(ctx context.Context) (n int64, locked bool, err error) {
	tx, err := ps.pool.Begin(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("prune: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, ps.pruneKey).Scan(&locked); err != nil {
		return 0, false, fmt.Errorf("prune: %w", err)
	}
	if !locked {
		return 0, false, nil
	}
	tag, err := tx.Exec(ctx, ps.sql.prune, ps.cfg.AppName, ps.cfg.Retention, pruneBatch)
	if err != nil {
		return 0, true, fmt.Errorf("prune: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, true, fmt.Errorf("prune: %w", err)
	}
	return tag.RowsAffected(), true, nil
}
