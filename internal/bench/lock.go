package bench

import (
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/advisorylock"
)

// lockHandoffGoroutines is the concurrency of the handoff rows.
const lockHandoffGoroutines = 8

// Lock benchmarks package advisorylock against raw session advisory locks on
// the same server, in the same run (measurements alternate in rounds):
//
//   - lock.uncontended.c1: p50 latency of Manager.Acquire + Lock.Release on
//     a free key vs pg_try_advisory_lock + pg_advisory_unlock on one pooled
//     connection;
//   - lock.handoff.c8: grants per second when 8 goroutines of one instance
//     take and release one key in a loop vs 8 connections looping
//     pg_advisory_lock / pg_advisory_unlock on one key.
//
// It uses its own pool (a copy of pool's configuration with room for the 8
// raw connections), so pool's size does not skew either side.
func Lock(ctx context.Context, pool *pgxpool.Pool, opts Options) ([]Row, error) {
	opts = opts.WithDefaults()
	cfg := pool.Config().Copy()
	cfg.MaxConns = 2*lockHandoffGoroutines + 2
	cfg.MinConns = 0
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer p.Close()

	app := opts.Prefix + "-lock"
	m, err := advisorylock.New(p, &advisorylock.Config{
		AppName: app, InstanceID: app, Schema: opts.Schema,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return nil, err
	}
	if err := m.Start(ctx); err != nil {
		return nil, err
	}
	defer func() {
		_ = m.Close(context.WithoutCancel(ctx))
		_, _ = p.Exec(context.WithoutCancel(ctx), `DELETE FROM `+pgx.Identifier{opts.Schema, "locks"}.Sanitize()+` WHERE app = $1`, app)
	}()
	rawKey := advisoryKey(app)

	// Uncontended.
	ours := func(ctx context.Context, i int) error {
		l, err := m.Acquire(ctx, "uncontended", time.Minute)
		if err != nil {
			return err
		}
		return l.Release(ctx)
	}
	raw := func(ctx context.Context, i int) error {
		c, err := p.Acquire(ctx)
		if err != nil {
			return err
		}
		defer c.Release()
		var ok bool
		if err := c.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, rawKey).Scan(&ok); err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("bench: raw advisory lock %d is held", rawKey)
		}
		return c.QueryRow(ctx, `SELECT pg_advisory_unlock($1)`, rawKey).Scan(&ok)
	}
	const rounds = 4
	per := max(opts.Ops/rounds, 1)
	var oursLat, rawLat Sample
	for range rounds {
		s, _, err := Run(ctx, per, 1, raw)
		if err != nil {
			return nil, fmt.Errorf("bench lock raw uncontended: %w", err)
		}
		rawLat = append(rawLat, s...)
		s, _, err = Run(ctx, per, 1, ours)
		if err != nil {
			return nil, fmt.Errorf("bench lock uncontended: %w", err)
		}
		oursLat = append(oursLat, s...)
	}
	rows := []Row{Latency("lock.uncontended.c1", "pg_try_advisory_lock+pg_advisory_unlock",
		oursLat.Percentile(50), rawLat.Percentile(50))}

	// Handoffs between 8 goroutines on one key.
	oursHandoff := func(ctx context.Context, i int) error {
		l, err := m.Acquire(ctx, "handoff", time.Minute)
		if err != nil {
			return err
		}
		return l.Release(ctx)
	}
	conns := make([]*pgxpool.Conn, lockHandoffGoroutines)
	for i := range conns {
		if conns[i], err = p.Acquire(ctx); err != nil {
			for _, c := range conns[:i] {
				c.Release()
			}
			return nil, err
		}
	}
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	// Run splits op indexes into contiguous ranges, one per goroutine: map an
	// index to its goroutine's own connection.
	n := max(opts.Ops/2, lockHandoffGoroutines) // per Run; two Runs per side
	span := n / lockHandoffGoroutines
	rawHandoff := func(ctx context.Context, i int) error {
		c := conns[min(i/max(span, 1), lockHandoffGoroutines-1)]
		if _, err := c.Exec(ctx, `SELECT pg_advisory_lock($1)`, rawKey); err != nil {
			return err
		}
		var ok bool
		return c.QueryRow(ctx, `SELECT pg_advisory_unlock($1)`, rawKey).Scan(&ok)
	}
	var oursOps, rawOps float64
	for range 2 {
		_, tput, err := Run(ctx, n, lockHandoffGoroutines, rawHandoff)
		if err != nil {
			return nil, fmt.Errorf("bench lock raw handoff: %w", err)
		}
		rawOps += tput / 2
		_, tput, err = Run(ctx, n, lockHandoffGoroutines, oursHandoff)
		if err != nil {
			return nil, fmt.Errorf("bench lock handoff: %w", err)
		}
		oursOps += tput / 2
	}
	rows = append(rows, Throughput("lock.handoff.c8", "pg_advisory_lock+pg_advisory_unlock (8 conns)", oursOps, rawOps))
	return rows, nil
}

func advisoryKey(s string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("pgcoord.bench.lock:" + s))
	return int64(h.Sum64())
}
