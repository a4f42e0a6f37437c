package pgcache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/internal/every"
	"github.com/pgcoord/pgcoord/internal/lockkey"
)

// sweepLoop runs Sweep every SweepInterval until ctx ends.
func (m *Manager) sweepLoop(ctx context.Context, done chan struct{}) {
	defer close(done)
	every.Run(ctx, m.cfg.SweepInterval, func(ctx context.Context) {
		if err := m.Sweep(ctx); err != nil && ctx.Err() == nil {
			m.logger.WarnContext(ctx, "pgcache: sweep failed", slog.Any("error", err))
		}
	})
}

// Sweep runs one sweep now (the sweeper of Start runs it periodically): it
// deletes this app's expired rows, then the oldest rows of each postgres
// cache of this manager beyond its MaxEntries, in batches of SweepBatchSize
// and at most DefaultSweepMaxBatches batches per step. Each batch is its own
// transaction holding an advisory transaction lock (per app for expiry, per
// cache for MaxEntries): while another instance holds it this instance skips
// that step, so one instance sweeps at a time and batches never overlap.
// Reads never depend on the sweeper: they filter expired rows themselves.
func (m *Manager) Sweep(ctx context.Context) error {
	if m.life.Stopped() {
		return ErrClosed
	}
	byPrefix := map[string]*Cache{}
	var bounded []*Cache
	for _, c := range m.cacheList() {
		if c.pg == nil {
			continue
		}
		if _, ok := byPrefix[c.spec.prefix]; !ok {
			byPrefix[c.spec.prefix] = c
		}
		if c.spec.maxEntries > 0 {
			bounded = append(bounded, c)
		}
	}
	expLock := lockkey.Key(m.cfg.Schema, lockkey.CacheSweep, m.cfg.AppName)
	for range DefaultSweepMaxBatches {
		var n int
		got, err := m.lockedBatch(ctx, expLock, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, m.sql.sweepExpired, m.cfg.AppName, m.cfg.SweepBatchSize)
			if err != nil {
				return err
			}
			prefixes, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			n = len(prefixes)
			for _, p := range prefixes {
				if c := byPrefix[p]; c != nil {
					c.stats.expiredSwept.Add(1)
				} else {
					m.sweptOther.Add(1)
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("pgcache: sweep expired: %w", err)
		}
		if n > 0 {
			m.swept.Notify()
			m.logger.DebugContext(ctx, "pgcache: swept expired entries", slog.Int("entries", n))
		}
		if !got || n < m.cfg.SweepBatchSize {
			break
		}
	}
	var errs []error
	for _, c := range bounded {
		if err := m.evict(ctx, c); err != nil {
			errs = append(errs, opErr("evict", c.spec.name, err))
		}
	}
	return errors.Join(errs...)
}

// evict deletes the oldest-written rows of c beyond MaxEntries.
func (m *Manager) evict(ctx context.Context, c *Cache) error {
	lock := lockkey.Key(m.cfg.Schema, lockkey.CacheEvict, m.cfg.AppName, c.spec.prefix)
	for range DefaultSweepMaxBatches {
		var n int64
		got, err := m.lockedBatch(ctx, lock, func(tx pgx.Tx) error {
			var count int64
			if err := tx.QueryRow(ctx, m.sql.countEntries, m.cfg.AppName, c.spec.prefix).Scan(&count); err != nil {
				return err
			}
			excess := min(count-int64(c.spec.maxEntries), int64(m.cfg.SweepBatchSize))
			if excess <= 0 {
				return nil
			}
			tag, err := tx.Exec(ctx, m.sql.evictOldest, m.cfg.AppName, c.spec.prefix, excess)
			n = tag.RowsAffected()
			return err
		})
		if err != nil {
			return err
		}
		if n > 0 {
			c.stats.evictions.Add(uint64(n))
			c.logger.DebugContext(ctx, "pgcache: evicted oldest entries", slog.Int64("entries", n), slog.Int("max_entries", c.spec.maxEntries))
		}
		if !got || n < int64(m.cfg.SweepBatchSize) {
			return nil
		}
	}
	return nil
}

// lockedBatch runs fn in a transaction that holds the advisory transaction
// lock key lock (from internal/lockkey); got is false (and fn is not run) when another session
// holds it.
func (m *Manager) lockedBatch(ctx context.Context, lock int64, fn func(tx pgx.Tx) error) (got bool, err error) {
	err = pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, lock).Scan(&got); err != nil {
			return err
		}
		if !got {
			return nil
		}
		return fn(tx)
	})
	return got, err
}
