package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgcoord/pgcoord/internal/otelx"
	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/pgcache"
)

// otelRounds alternates the instrumented and the switched-off side, so
// background load weighs on both alike.
const otelRounds = 4

// otelSide is one side of an otel.* row: the providers its components get.
// The instrumented side gets nil (the global providers: no-ops until an
// application installs an SDK, what a user without OpenTelemetry runs); the
// other gets otelx.Off, which switches instrumentation off.
type otelSide struct {
	name string
	mp   metric.MeterProvider
	tp   trace.TracerProvider
}

var otelSides = [2]otelSide{{name: "noop"}, {name: "off", mp: otelx.Off, tp: otelx.OffTracer}}

// Otel measures what instrumentation costs with the default (no-op)
// providers against the same operation with instrumentation switched off
// (otelx.Off), the sides alternating in rounds in one run:
//
//   - otel.cache.get.c1: p50 of a typed Get, as cache.get.c1;
//   - otel.listen.deliver_p50.c1: p50 from the start of a Publish until a
//     subscriber of another instance has the message, as
//     listen.deliver_p50.c1.
//
// Issue 13's bar is a cost ratio ≤ 1.05 on both.
func Otel(ctx context.Context, pool *pgxpool.Pool, opts Options) ([]Row, error) {
	opts = opts.WithDefaults()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	var gets, delivers [2]func(context.Context, int) error
	for i, side := range otelSides {
		app := opts.Prefix + "-otel-" + side.name
		get, closeCache, err := otelCacheGet(ctx, pool, opts, app, side, logger)
		if err != nil {
			return nil, err
		}
		defer closeCache()
		deliver, closeListen, err := otelDeliver(ctx, pool, opts, app, side, logger)
		if err != nil {
			return nil, err
		}
		defer closeListen()
		gets[i], delivers[i] = get, deliver
	}
	for i := range otelSides { // warm up (connections, prepared statements)
		if _, _, err := Run(ctx, 20, 1, gets[i]); err != nil {
			return nil, err
		}
		if _, err := runDeliver(ctx, 20, delivers[i]); err != nil {
			return nil, err
		}
	}
	var get, deliver [2]Sample
	per := max(1, opts.Ops/otelRounds)
	for round := range otelRounds {
		for i := range otelSides {
			if round%2 == 1 {
				i = 1 - i // each side goes first in half the rounds
			}
			l, _, err := Run(ctx, per, 1, gets[i])
			if err != nil {
				return nil, fmt.Errorf("bench otel: cache get (%s): %w", otelSides[i].name, err)
			}
			get[i] = append(get[i], l...)
			l, err = runDeliver(ctx, per, delivers[i])
			if err != nil {
				return nil, fmt.Errorf("bench otel: listen deliver (%s): %w", otelSides[i].name, err)
			}
			deliver[i] = append(deliver[i], l...)
		}
	}
	return []Row{
		Latency("otel.cache.get.c1", "Get, instrumentation off", get[0].Percentile(50), get[1].Percentile(50)),
		Latency("otel.listen.deliver_p50.c1", "Publish → handler, instrumentation off", deliver[0].Percentile(50), deliver[1].Percentile(50)),
	}, nil
}

// otelCacheGet returns a Get of one side's cache over keys written first.
func otelCacheGet(ctx context.Context, pool *pgxpool.Pool, opts Options, app string, side otelSide, logger *slog.Logger) (func(context.Context, int) error, func(), error) {
	m, err := pgcache.NewManager(pool, &pgcache.ManagerConfig{AppName: app, Schema: opts.Schema, Logger: logger,
		MeterProvider: side.mp, TracerProvider: side.tp})
	if err != nil {
		return nil, nil, err
	}
	closeAll := func() {
		_ = m.Close(context.WithoutCancel(ctx))
		_, _ = pool.Exec(context.WithoutCancel(ctx), `DELETE FROM `+pgx.Identifier{opts.Schema, "cache_entries"}.Sanitize()+` WHERE app = $1`, app)
	}
	c, err := m.CreateCache(ctx, pgcache.CacheConfig{Name: "bench"})
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	keys := make([]string, cacheKeys)
	items := make([]pgcache.Item, cacheKeys)
	for i := range keys {
		keys[i] = "user:" + strconv.Itoa(i)
		items[i] = pgcache.Item{Key: keys[i], Value: cacheValue{ID: i, Name: "user " + strconv.Itoa(i), Roles: []string{"member"}}}
	}
	if err := c.MSet(ctx, items, 0); err != nil {
		closeAll()
		return nil, nil, err
	}
	return func(ctx context.Context, i int) error {
		_, ok, err := pgcache.Get[cacheValue](ctx, c, keys[i%cacheKeys])
		if err == nil && !ok {
			err = fmt.Errorf("bench: cache miss on %s", keys[i%cacheKeys])
		}
		return err
	}, closeAll, nil
}

// otelDeliver returns a publish of i by one side's publisher, whose
// subscriber (another instance of the side's app) sends i to the returned
// function's receiver; runDeliver times it.
func otelDeliver(ctx context.Context, pool *pgxpool.Pool, opts Options, app string, side otelSide, logger *slog.Logger) (func(context.Context, int) error, func(), error) {
	var started []*listen.PubSub
	closeAll := func() {
		for _, ps := range started {
			_ = ps.Close(context.WithoutCancel(ctx))
		}
		_, _ = pool.Exec(context.WithoutCancel(ctx), `DELETE FROM `+pgx.Identifier{opts.Schema, "messages"}.Sanitize()+` WHERE app = $1`, app)
	}
	recv := make(chan int, 64)
	for _, id := range []string{"pub", "sub"} {
		ps, err := listen.New(pool, &listen.Config{AppName: app, InstanceID: id, Schema: opts.Schema, Logger: logger, PruneInterval: -1,
			MeterProvider: side.mp, TracerProvider: side.tp})
		if err == nil && id == "sub" {
			_, err = ps.Subscribe(ctx, "bench", IntSink(recv), nil)
		}
		if err == nil {
			err = ps.Start(ctx)
		}
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		started = append(started, ps)
	}
	pub := started[0]
	return func(ctx context.Context, i int) error {
		if err := pub.Publish(ctx, "bench", json.RawMessage(strconv.Itoa(i)), nil); err != nil {
			return err
		}
		_, err := oneTrip(ctx, func(context.Context, int) error { return nil }, recv, i)
		return err
	}, closeAll, nil
}

// runDeliver times n publish-to-handler trips of deliver.
func runDeliver(ctx context.Context, n int, deliver func(context.Context, int) error) (Sample, error) {
	l, _, err := Run(ctx, n, 1, func(ctx context.Context, i int) error { return deliver(ctx, 1_000_000+i) })
	return l, err
}
