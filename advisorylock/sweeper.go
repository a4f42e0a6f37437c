package advisorylock

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"
)

// runSweeper deletes lease rows that have been free for longer than
// Retention, so keys used once (per-entity keys) do not accumulate. Every
// instance sweeps; concurrent sweeps skip each other's rows.
func (m *Manager) runSweeper(ctx context.Context) {
	every := min(max(m.cfg.Retention/4, time.Minute), 10*time.Minute)
	for {
		d := every/2 + time.Duration(rand.Int64N(int64(every)))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if _, err := m.sweep(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("sweep of free lease rows failed", slog.Any("error", err))
		}
	}
}

// sweep deletes one bounded batch of free rows untouched for Retention and
// returns how many it deleted.
func (m *Manager) sweep(ctx context.Context) (int64, error) {
	tag, err := m.pool.Exec(ctx, m.q.sweep, micros(m.cfg.Retention), m.class, sweepBatch)
	if err != nil {
		return 0, err
	}
	if n := tag.RowsAffected(); n > 0 {
		m.log.Debug("swept free lease rows", slog.Int64("count", n))
	}
	return tag.RowsAffected(), nil
}
