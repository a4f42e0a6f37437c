package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync/atomic"
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
//   - listen.throughput.c1 / listen.throughput.c8: messages published and
//     delivered per second with 1 or 8 concurrent publishers (until the last
//     one is delivered); vs 1 or 8 goroutines sending autocommit pg_notify to
//     one LISTEN connection.
//   - listen.deliver_p50.c8 / listen.deliver_p99.c8: latency of each message
//     of the 8-publisher run, from the start of its publish to its receipt;
//   - listen.wakeups.c8: reads of the log per committed PublishTx (see
//     listenWakeups);
//   - listen.scale.n48 / listen.scale_p50.n48: deliveries per second and
//     delivery latency with 48 listening instances (see listenScale).
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
	_, err = sub.Subscribe(ctx, "bench", IntSink(ours), &listen.SubscribeOpts{BufferSize: opts.Ops + 64})
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
		forwardNotifications(lctx, lconn, raw)
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

	type side struct {
		lat1, lat8 Sample
		tput1      []float64
		tput8      []float64
	}
	var our, rw side
	for range listenRounds {
		for _, x := range []struct {
			s       *side
			publish func(context.Context, int) error
			recv    chan int
			name    string
		}{{&our, oursPublish, ours, "pgcoord"}, {&rw, rawPublish, raw, "raw"}} {
			l, err := latencies(ctx, opts.Ops/listenRounds, x.publish, x.recv)
			if err != nil {
				return nil, fmt.Errorf("bench listen: %s latency: %w", x.name, err)
			}
			x.s.lat1 = append(x.s.lat1, l...)
			for _, conc := range []int{1, listenPublishers} {
				tp, l, err := throughput(ctx, opts.Ops, conc, x.publish, x.recv)
				if err != nil {
					return nil, fmt.Errorf("bench listen: %s throughput c%d: %w", x.name, conc, err)
				}
				if conc == 1 {
					x.s.tput1 = append(x.s.tput1, tp)
				} else {
					x.s.tput8 = append(x.s.tput8, tp)
					x.s.lat8 = append(x.s.lat8, l...)
				}
			}
		}
	}
	wake, err := listenWakeups(ctx, p, newPS, opts.Ops*5)
	if err != nil {
		return nil, err
	}
	scale, err := listenScale(ctx, p.Config(), pub, p, opts)
	if err != nil {
		return nil, err
	}
	return append(scale,
		wake,
		Latency("listen.deliver_p50.c1", "pg_notify → LISTEN p50", our.lat1.Percentile(50), rw.lat1.Percentile(50)),
		Latency("listen.deliver_p99.c1", "pg_notify → LISTEN p99", our.lat1.Percentile(99), rw.lat1.Percentile(99)),
		Latency("listen.deliver_p50.c8", "pg_notify → LISTEN p50, 8 senders", our.lat8.Percentile(50), rw.lat8.Percentile(50)),
		Latency("listen.deliver_p99.c8", "pg_notify → LISTEN p99, 8 senders", our.lat8.Percentile(99), rw.lat8.Percentile(99)),
		Throughput("listen.throughput.c1", "autocommit pg_notify → LISTEN, 1 sender", best(our.tput1), best(rw.tput1)),
		Throughput("listen.throughput.c8", "autocommit pg_notify → LISTEN, 8 senders", best(our.tput8), best(rw.tput8)),
	), nil
}

// IntSink is a listen handler whose messages are JSON integers: it sends
// each to out.
func IntSink(out chan<- int) listen.Handler {
	return func(_ context.Context, m listen.Message) error {
		var i int
		if err := json.Unmarshal(m.Payload, &i); err != nil {
			return err
		}
		out <- i
		return nil
	}
}

// forwardNotifications sends the integer payload of each notification conn
// receives to out, until ctx ends or the connection fails.
func forwardNotifications(ctx context.Context, conn *pgx.Conn, out chan<- int) {
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return
		}
		if i, err := strconv.Atoi(n.Payload); err == nil {
			out <- i
		}
	}
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

// throughput publishes n messages from conc goroutines and returns messages
// per second until the last one was received, and each message's latency
// from the start of its publish to its receipt.
func throughput(ctx context.Context, n, conc int, publish func(context.Context, int) error, recv <-chan int) (float64, Sample, error) {
	sentAt := make([]atomic.Int64, n)
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		_, _, err := Run(ctx, n, conc, func(ctx context.Context, i int) error {
			sentAt[i].Store(time.Now().UnixNano())
			return publish(ctx, i)
		})
		errc <- err
	}()
	timeout := time.NewTimer(2 * time.Minute)
	defer timeout.Stop()
	lat := make(Sample, 0, n)
	for got := 0; got < n; {
		select {
		case i := <-recv:
			got++
			if i >= 0 && i < n {
				lat = append(lat, time.Duration(time.Now().UnixNano()-sentAt[i].Load()))
			}
		case err := <-errc:
			if err != nil {
				return 0, nil, err
			}
			errc = nil
		case <-timeout.C:
			return 0, nil, fmt.Errorf("%d of %d messages delivered within 2m", got, n)
		case <-ctx.Done():
			return 0, nil, ctx.Err()
		}
	}
	elapsed := time.Since(start)
	if errc != nil {
		if err := <-errc; err != nil {
			return 0, nil, err
		}
	}
	return float64(n) / elapsed.Seconds(), lat, nil
}

// listenWakeups is listen.wakeups.c8: n transactions, each one PublishTx,
// from 8 concurrent writers; the row is the number of reads of the log the
// subscriber needed to deliver them all, against one read per wake-up.
func listenWakeups(ctx context.Context, p *pgxpool.Pool, newPS func(string) (*listen.PubSub, error), n int) (Row, error) {
	pub, err := newPS("wake-pub")
	if err != nil {
		return Row{}, err
	}
	defer pub.Close(context.WithoutCancel(ctx)) //nolint:errcheck
	sub, err := newPS("wake-sub")
	if err != nil {
		return Row{}, err
	}
	defer sub.Close(context.WithoutCancel(ctx)) //nolint:errcheck
	var got atomic.Int64
	all := make(chan struct{})
	if _, err := sub.Subscribe(ctx, "wake", func(context.Context, listen.Message) error {
		if got.Add(1) == int64(n) {
			close(all)
		}
		return nil
	}, &listen.SubscribeOpts{BufferSize: n}); err != nil {
		return Row{}, err
	}
	if err := sub.Start(ctx); err != nil {
		return Row{}, err
	}
	before := sub.Stats().LogReads
	errs := make(chan error, listenPublishers)
	for w := range listenPublishers {
		go func() {
			for i := w; i < n; i += listenPublishers {
				tx, err := p.Begin(ctx)
				if err != nil {
					errs <- err
					return
				}
				if err := pub.PublishTx(ctx, tx, "wake", i, nil); err != nil {
					_ = tx.Rollback(ctx)
					errs <- err
					return
				}
				if err := tx.Commit(ctx); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range listenPublishers {
		if err := <-errs; err != nil {
			return Row{}, fmt.Errorf("bench listen: wake-ups: %w", err)
		}
	}
	select {
	case <-all:
	case <-time.After(time.Minute):
		return Row{}, fmt.Errorf("bench listen: wake-ups: %d of %d delivered", got.Load(), n)
	case <-ctx.Done():
		return Row{}, ctx.Err()
	}
	reads := float64(sub.Stats().LogReads - before)
	return Row{Name: "listen.wakeups.c8", Pgcoord: reads, Baseline: float64(n), BaselineName: "one read per wake-up",
		Unit: "reads", CostRatio: ratio(reads, float64(n))}, nil
}
