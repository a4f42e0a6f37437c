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
//     pg_advisory_lock / pg_advisory_unlock on one key;
//   - lock.handoff.i8 / lock.handoff.i32: the same across 8 or 32 instances
//     (separate Managers, each with its own pool and liveness session, one
//     waiter each) vs 8 or 32 connections looping pg_advisory_lock /
//     pg_advisory_unlock; with the fairness of those runs:
//     lock.handoff_max_wait.i8/.i32 (the longest wait for one grant) and
//     lock.handoff_min_share.i8/.i32 (the least-served waiter's grants over
//     an even share; 1.0 = all served alike, 0 = a waiter starved).
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
	for _, instances := range lockHandoffInstances {
		r, err := lockAcrossInstances(ctx, pool.Config(), opts, instances)
		if err != nil {
			return nil, fmt.Errorf("bench lock handoff i%d: %w", instances, err)
		}
		rows = append(rows, r...)
	}
	return rows, nil
}

// lockHandoffInstances are the instance counts of the lock.handoff.iN rows.
var lockHandoffInstances = []int{8, 32}

// lockAcrossInstances measures grants of one key contended by n instances,
// one waiter each, against n connections blocking on one advisory lock; the
// sides alternate in two rounds, each a budget of grants shared by the
// waiters (see contend).
func lockAcrossInstances(ctx context.Context, base *pgxpool.Config, opts Options, n int) ([]Row, error) {
	app := fmt.Sprintf("%s-lock-i%d", opts.Prefix, n)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	var (
		pools    []*pgxpool.Pool
		managers []*advisorylock.Manager
	)
	defer func() {
		closeAll(len(managers), func(i int) { _ = managers[i].Close(context.WithoutCancel(ctx)) })
		if len(pools) > 0 {
			_, _ = pools[0].Exec(context.WithoutCancel(ctx), `DELETE FROM `+pgx.Identifier{opts.Schema, "locks"}.Sanitize()+` WHERE app = $1`, app)
		}
		for _, p := range pools {
			p.Close()
		}
	}()
	newPool := func(size int32) (*pgxpool.Pool, error) {
		cfg := base.Copy()
		cfg.MaxConns, cfg.MinConns = size, 0
		p, err := pgxpool.NewWithConfig(ctx, cfg)
		if err == nil {
			pools = append(pools, p)
		}
		return p, err
	}
	for i := range n {
		// An instance: its own pool (one waiter needs one connection at a
		// time; the second serves the Manager's own statements) and Manager.
		p, err := newPool(2)
		if err != nil {
			return nil, err
		}
		m, err := advisorylock.New(p, &advisorylock.Config{
			AppName: app, InstanceID: fmt.Sprintf("%s-%d", app, i), Schema: opts.Schema, Logger: logger,
		})
		if err != nil {
			return nil, err
		}
		managers = append(managers, m)
	}
	if err := startAll(ctx, n, func(ctx context.Context, i int) error { return managers[i].Start(ctx) }); err != nil {
		return nil, err
	}
	rawPool, err := newPool(int32(n))
	if err != nil {
		return nil, err
	}
	conns := make([]*pgxpool.Conn, n)
	for i := range conns {
		if conns[i], err = rawPool.Acquire(ctx); err != nil {
			return nil, err
		}
		defer conns[i].Release()
	}
	rawKey := advisoryKey(app)
	ours := func(ctx context.Context, w int) error {
		l, err := managers[w].Acquire(ctx, "handoff", time.Minute)
		if err != nil {
			return err
		}
		return l.Release(ctx)
	}
	raw := func(ctx context.Context, w int) error {
		if _, err := conns[w].Exec(ctx, `SELECT pg_advisory_lock($1)`, rawKey); err != nil {
			return err
		}
		var ok bool
		return conns[w].QueryRow(ctx, `SELECT pg_advisory_unlock($1)`, rawKey).Scan(&ok)
	}
	total := max(opts.Ops/2, n) // per round and side
	var oursC, rawC contention
	for range 2 {
		c, err := contend(ctx, n, total, raw)
		if err != nil {
			return nil, fmt.Errorf("raw: %w", err)
		}
		rawC.add(c)
		if c, err = contend(ctx, n, total, ours); err != nil {
			return nil, err
		}
		oursC.add(c)
	}
	baseline := fmt.Sprintf("pg_advisory_lock+pg_advisory_unlock (%d conns)", n)
	share := Row{Name: fmt.Sprintf("lock.handoff_min_share.i%d", n), Pgcoord: oursC.minShare(), Baseline: rawC.minShare(),
		BaselineName: baseline, Unit: "share", CostRatio: ratio(rawC.minShare(), oursC.minShare())}
	return []Row{
		Throughput(fmt.Sprintf("lock.handoff.i%d", n), baseline, oursC.rate(), rawC.rate()),
		Latency(fmt.Sprintf("lock.handoff_max_wait.i%d", n), baseline+", longest wait", oursC.maxWait, rawC.maxWait),
		share,
	}, nil
}

func advisoryKey(s string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("pgcoord.bench.lock:" + s))
	return int64(h.Sum64())
}
