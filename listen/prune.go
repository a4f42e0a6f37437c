package listen

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/pgcoord/pgcoord/internal/every"
)

// pruneBatch bounds the rows one pruning statement deletes.
const pruneBatch = 5000

// retentionMarker is the channel of retention markers: rows of the log with
// an empty sender (no instance has that id) that no listener delivers. Each
// records a snapshot (pg_current_snapshot) and, as published_at, the time
// it was taken.
const retentionMarker = "pgcoord.retention-marker"

// markerDivisor sets how often an instance writes a marker while pruning:
// every Retention/markerDivisor. A row is pruned between Retention and about
// Retention*(1+1/markerDivisor) + PruneInterval after its commit.
const markerDivisor = 16

// pruneLoop deletes messages older than Retention every PruneInterval.
func (ps *PubSub) pruneLoop() {
	every.Run(ps.ctx, ps.cfg.PruneInterval, func(ctx context.Context) {
		if _, err := ps.prune(ctx); err != nil && ctx.Err() == nil {
			ps.logger.Warn("listen: pruning the messages log failed", slog.String("app", ps.cfg.AppName), slog.Any("error", err))
		}
	})
}

// prune deletes this app's messages committed longer than Retention ago in
// bounded batches, each in a transaction holding a transaction-scoped
// advisory lock, so one instance of the app prunes at a time and the others
// skip. It returns the number of rows deleted.
//
// published_at is the publishing transaction's start, not its commit, so it
// alone would prune a message of a transaction open longer than Retention
// before a connected listener could read it. The first batch of a run also
// writes a retention marker (at most one per Retention/markerDivisor per
// instance), and a row is deleted only when its transaction had ended in
// the snapshot of a marker older than Retention: it had committed by then.
// A transaction left open elsewhere on the server holds back no other rows. A log without such a marker (in the first Retention after this
// version first runs) is not pruned.
func (ps *PubSub) prune(ctx context.Context) (int64, error) {
	var total int64
	for i := range 100 {
		n, locked, err := ps.pruneOnce(ctx, i == 0)
		total += n
		if err != nil || !locked || n < pruneBatch {
			return total, err
		}
	}
	return total, nil
}

func (ps *PubSub) pruneOnce(ctx context.Context, mark bool) (n int64, locked bool, err error) {
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
	now := time.Now()
	marked := mark && now.Sub(time.Unix(0, ps.lastMark.Load())) >= ps.cfg.Retention/markerDivisor
	if marked {
		if _, err := tx.Exec(ctx, ps.sql.mark, ps.cfg.AppName, retentionMarker); err != nil {
			return 0, true, fmt.Errorf("prune: retention marker: %w", err)
		}
	}
	tag, err := tx.Exec(ctx, ps.sql.prune, ps.cfg.AppName, ps.cfg.Retention, pruneBatch, retentionMarker)
	if err != nil {
		return 0, true, fmt.Errorf("prune: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, true, fmt.Errorf("prune: %w", err)
	}
	if marked {
		ps.lastMark.Store(now.UnixNano())
	}
	return tag.RowsAffected(), true, nil
}
