package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/listen"
)

// listenPublishers is the concurrency of the throughput rows.
const listenPublishers = 8

// listenRounds alternates pgcoord and raw measurements, so background load
// on the server weighs on both alike.
const listenRounds = 2

// Listen benchmarks package listen against raw pg_notify → LISTEN on the same
// server, in the same run:
//
//   - listen.deliver_p50.c1 / listen.deliver_p99.c1: latency from the start of
//     a publish until a subscriber of another instance has the message, one
//     publisher, one message in flight; vs an autocommit pg_notify until a
//     dedicated LISTEN connection has it.
//   - listen.throughput.c8: messages published and delivered per second with
//     8 concurrent publishers (until the last one is delivered); vs 8
//     goroutines sending autocommit pg_notify to one LISTEN connection.
//
// Payloads are small JSON numbers (they travel inline in both cases). It uses
// its own pool (a copy of pool's configuration) and deletes the messages it
// wrote.
func Listen(ctx context.Context, pool *pgxpool.Pool, opts Options) ([]Row, error) {
	opts = opts.WithDefaults()
	cfg := pool.Config().Copy()
	cfg.MaxConns = listenPublishers + 4
	cfg.MinConns = 0
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer p.Close()

	app := opts.Prefix + "-listen"
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	newPS := func(id string) (*listen.PubSub, error) {
		return listen.New(p, &listen.Config{AppName: app, InstanceID: id, Schema: opts.Schema, Logger: logger, PruneInterval: -1})
	}
	pub, err := newPS("pub")
	if err != nil {
		return nil, err
	}
	defer pub.Close(context.WithoutCancel(ctx)) //nolint:errcheck
	sub, err := newPS("sub")
	if err != nil {
		return nil, err
	}
	defer sub.Close(context.WithoutCancel(ctx)) //nolint:errcheck
	defer func() {
		_, _ = p.Exec(context.WithoutCancel(ctx), `DELETE FROM `+pgx.Identifier{opts.Schema, "messages"}.Sanitize()+` WHERE app = $1`, app)
	}()

	ours := make(chan int, opts.Ops+64)
	_, err = sub.Subscribe(ctx, "bench", func(_ context.Context, m listen.Message) error {
		var i int
		if err := json.Unmarshal(m.Payload, &i); err != nil {
			return err
		}
		ours <- i
		return nil
	}, &listen.SubscribeOpts{BufferSize: opts.Ops + 64})
	if err != nil {
		return nil, err
	}
	if err := pub.Start(ctx); err != nil {
		return nil, err
	}
	if err := sub.Start(ctx); err != nil {
		return nil, err
	}
	oursPublish := func(ctx context.Context, i int) error {
		return pub.Publish(ctx, "bench", json.RawMessage(strconv.Itoa(i)), nil)
	}

	// The raw baseline: one dedicated LISTEN connection.
	rawChannel := pgx.Identifier{opts.Prefix + "_raw"}
	lconn, err := pgx.ConnectConfig(ctx, p.Config().ConnConfig.Copy())
	if err != nil {
		return nil, err
	}
	defer lconn.Close(context.WithoutCancel(ctx)) //nolint:errcheck
	if _, err := lconn.Exec(ctx, "LISTEN "+rawChannel.Sanitize()); err != nil {
		return nil, err
	}
	raw := make(chan int, opts.Ops+64)
	lctx, stopListener := context.WithCancel(ctx)
	listenerDone := make(chan struct{})
	go func() {
		defer close(listenerDone)
		for {
			n, err := lconn.WaitForNotification(lctx)
			if err != nil {
				return
			}
			if i, err := strconv.Atoi(n.Payload); err == nil {
				raw <- i
			}
		}
	}()
	defer func() {
		stopListener()
		<-listenerDone
	}()
	rawPublish := func(ctx context.Context, i int) error {
		_, err := p.Exec(ctx, `SELECT pg_notify($1, $2)`, rawChannel[0], strconv.Itoa(i))
		return err
	}

	// Warm up both paths (connections, prepared statements).
	for i := range 20 {
		if _, err := oneTrip(ctx, oursPublish, ours, i); err != nil {
			return nil, err
		}
		if _, err := oneTrip(ctx, rawPublish, raw, i); err != nil {
			return nil, err
		}
	}

	var oursLat, rawLat Sample
	var oursTput, rawTput []float64
	for range listenRounds {
		l, err := latencies(ctx, opts.Ops/listenRounds, oursPublish, ours)
		if err != nil {
			return nil, fmt.Errorf("bench listen: pgcoord latency: %w", err)
		}
		oursLat = append(oursLat, l...)
		l, err = latencies(ctx, opts.Ops/listenRounds, rawPublish, raw)
		if err != nil {
			return nil, fmt.Errorf("bench listen: raw latency: %w", err)
		}
		rawLat = append(rawLat, l...)

		tp, err := throughput(ctx, opts.Ops, oursPublish, ours)
		if err != nil {
			return nil, fmt.Errorf("bench listen: pgcoord throughput: %w", err)
		}
		oursTput = append(oursTput, tp)
		tp, err = throughput(ctx, opts.Ops, rawPublish, raw)
		if err != nil {
			return nil, fmt.Errorf("bench listen: raw throughput: %w", err)
		}
		rawTput = append(rawTput, tp)
	}
	return []Row{
		Latency("listen.deliver_p50.c1", "pg_notify → LISTEN p50", oursLat.Percentile(50), rawLat.Percentile(50)),
		Latency("listen.deliver_p99.c1", "pg_notify → LISTEN p99", oursLat.Percentile(99), rawLat.Percentile(99)),
		Throughput("listen.throughput.c8", "autocommit pg_notify → LISTEN, 8 senders", best(oursTput), best(rawTput)),
	}, nil
}

func best(xs []float64) float64 {
	var m float64
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// oneTrip publishes i and waits until it arrives on recv.
func oneTrip(ctx context.Context, publish func(context.Context, int) error, recv <-chan int, i int) (time.Duration, error) {
	t0 := time.Now()
	if err := publish(ctx, i); err != nil {
		return 0, err
	}
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case got := <-recv:
			if got == i {
				return time.Since(t0), nil
			}
		case <-timeout.C:
			return 0, errors.New("message not delivered within 30s")
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

func latencies(ctx context.Context, n int, publish func(context.Context, int) error, recv <-chan int) (Sample, error) {
	out := make(Sample, 0, n)
	for i := range n {
		d, err := oneTrip(ctx, publish, recv, 1_000_000+i)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// throughput publishes n messages from listenPublishers goroutines and
// returns messages per second until the last one was received.
func throughput(ctx context.Context, n int, publish func(context.Context, int) error, recv <-chan int) (float64, error) {
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		_, _, err := Run(ctx, n, listenPublishers, publish)
		errc <- err
	}()
	timeout := time.NewTimer(2 * time.Minute)
	defer timeout.Stop()
	for got := 0; got < n; {
		select {
		case <-recv:
			got++
		case err := <-errc:
			if err != nil {
				return 0, err
			}
			errc = nil
		case <-timeout.C:
			return 0, fmt.Errorf("%d of %d messages delivered within 2m", got, n)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	elapsed := time.Since(start)
	if errc != nil {
		if err := <-errc; err != nil {
			return 0, err
		}
	}
	return float64(n) / elapsed.Seconds(), nil
}
