package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/pgcoord/pgcoord/queue"
)

// queueWorkers is the worker count of both sides of every queue row.
const queueWorkers = 100

// queueBatch is the insert batch size used to fill a burn-down.
const queueBatch = 1000

// Queue benchmarks package queue against raw River on the same server and
// schema, one instance per side:
//
//   - queue.throughput: Ops no-op messages queued, then burned down by 100
//     workers, with identical fetch settings (pgcoord's derived defaults
//     applied to River too);
//   - queue.latency_p50 / queue.latency_p99: publish→Process-start latency of
//     back-to-back messages (each published once the previous one started),
//     identical settings;
//   - queue.throughput_defaults / queue.latency_p50_defaults: the same with
//     each side's defaults (River: FetchCooldown 100 ms, FetchPollInterval 1 s);
//   - queue.throughput_envelope: no pgcoord code at all: raw River burning
//     down jobs whose args have pgcoord's envelope for a message published
//     with default options ({"channel", "payload"}: 52 bytes of args, about
//     256-byte rows, 4 GIN entries) against the same River with {"i"} args
//     (28 bytes, 232-byte rows, 2 entries), same settings, sides alternating. It
//     isolates what the job row's shape costs River's fetch and completion
//     (every state change rewrites the row and its args GIN entries), the
//     part of queue.throughput's gap the envelope's contract fixes.
func Queue(ctx context.Context, pool *pgxpool.Pool, opts Options) ([]Row, error) {
	opts = opts.WithDefaults()
	n := opts.Ops
	// Back-to-back latency waits for each message; River's defaults can
	// take up to a poll interval (1 s) per message, so keep those runs short.
	latN := min(max(n/20, 20), 1000)
	latNDefaults := min(max(n/200, 10), 50)

	// pgcoord's derived settings for 100 workers, given to River verbatim.
	same := &riverSettings{notifyCooldown: river.FetchCooldownMin, fetchCooldown: 2 * time.Millisecond, pollInterval: queue.DefaultPollInterval}

	var rows []Row
	for _, m := range []struct {
		name   string
		river  *riverSettings
		defaul bool
	}{
		{"queue.throughput", same, false},
		{"queue.throughput_defaults", nil, true},
	} {
		p, err := pgcoordBurnDown(ctx, pool, opts, m.name, n)
		if err != nil {
			return nil, err
		}
		r, err := riverBurnDown(ctx, pool, opts, m.name, n, m.river)
		if err != nil {
			return nil, err
		}
		rows = append(rows, Throughput(m.name, "river", p, r))
	}

	// Alternate which shape runs first, so neither always meets the table
	// the other just filled.
	var env, plain []float64
	for rep := range 2 {
		for _, envelope := range []bool{rep == 0, rep != 0} {
			tp, err := riverBurnDownArgs(ctx, pool, opts, fmt.Sprintf("env%d%t", rep, envelope), n, same, envelope)
			if err != nil {
				return nil, err
			}
			if envelope {
				env = append(env, tp)
			} else {
				plain = append(plain, tp)
			}
		}
	}
	rows = append(rows, Throughput("queue.throughput_envelope", "River, {\"i\"} args instead of pgcoord's envelope", mean(env), mean(plain)))

	p, r, err := interleavedLatency(ctx, pool, opts, "lat", latN, same)
	if err != nil {
		return nil, err
	}
	rows = append(rows,
		Latency("queue.latency_p50", "river", p.Percentile(50), r.Percentile(50)),
		Latency("queue.latency_p99", "river", p.Percentile(99), r.Percentile(99)))

	p, r, err = interleavedLatency(ctx, pool, opts, "latdef", latNDefaults, nil)
	if err != nil {
		return nil, err
	}
	rows = append(rows, Latency("queue.latency_p50_defaults", "river", p.Percentile(50), r.Percentile(50)))
	return rows, nil
}

// riverSettings are raw River's fetch settings; nil means River's defaults.
type riverSettings struct {
	notifyCooldown, fetchCooldown, pollInterval time.Duration
}

var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

func newPgcoord(pool *pgxpool.Pool, opts Options, tag string) (*queue.EventQueue, error) {
	return queue.New(pool, &queue.Config{
		AppName:    opts.Prefix + "_" + tag,
		InstanceID: opts.Prefix + "_" + tag + "_pgcoord",
		Schema:     opts.Schema,
		Logger:     quietLogger,
	})
}

func stopQueue(q *queue.EventQueue) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = q.Stop(ctx)
}

// pgcoordBurnDown queues n messages, starts one instance with 100 workers and
// returns messages processed per second from Start to the last one.
func pgcoordBurnDown(ctx context.Context, pool *pgxpool.Pool, opts Options, tag string, n int) (float64, error) {
	q, err := newPgcoord(pool, opts, sanitizeTag(tag))
	if err != nil {
		return 0, err
	}
	defer stopQueue(q)
	var processed atomic.Int64
	done := make(chan struct{})
	if err := q.Subscribe(ctx, "noop", queue.Consumer{Concurrency: queueWorkers, Process: func(context.Context, queue.Message) error {
		if processed.Add(1) == int64(n) {
			close(done)
		}
		return nil
	}}); err != nil {
		return 0, err
	}
	for lo := 0; lo < n; lo += queueBatch {
		batch := make([]queue.Publication, 0, queueBatch)
		for i := lo; i < min(lo+queueBatch, n); i++ {
			batch = append(batch, queue.Publication{Channel: "noop", Payload: i})
		}
		if _, err := q.PublishMany(ctx, batch); err != nil {
			return 0, err
		}
	}
	t0 := time.Now()
	if err := q.Start(ctx); err != nil {
		return 0, err
	}
	select {
	case <-done:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}

type benchArgs struct {
	I int `json:"i"`
}

func (benchArgs) Kind() string { return "pgcoord_bench_noop" }

// envelopeArgs has the shape of package queue's river_job.args (a message
// published with default options), under benchArgs' kind: River's worker
// for benchArgs runs it (the extra fields are ignored).
type envelopeArgs struct {
	Channel    string `json:"channel"`
	Payload    int    `json:"payload"`
	TimeoutMS  int64  `json:"timeout_ms,omitempty"`
	MaxRetries int    `json:"max_retries,omitempty"`
}

func (envelopeArgs) Kind() string { return "pgcoord_bench_noop" }

func mean(xs []float64) float64 {
	sum := 0.0
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}

func newRiver(pool *pgxpool.Pool, opts Options, tag string, s *riverSettings, work func()) (*river.Client[pgx.Tx], string, error) {
	workers := river.NewWorkers()
	river.AddWorker(workers, river.WorkFunc(func(context.Context, *river.Job[benchArgs]) error {
		work()
		return nil
	}))
	name := opts.Prefix + "_" + tag + "_river"
	qc := river.QueueConfig{MaxWorkers: queueWorkers}
	cfg := &river.Config{
		ID:      name,
		Schema:  opts.Schema,
		Logger:  quietLogger,
		Workers: workers,
	}
	if s != nil {
		cfg.FetchCooldown = s.notifyCooldown
		qc.FetchCooldown = s.fetchCooldown
		qc.FetchPollInterval = s.pollInterval
	}
	cfg.Queues = map[string]river.QueueConfig{name: qc}
	c, err := river.NewClient(riverpgxv5.New(pool), cfg)
	return c, name, err
}

func stopRiver(c *river.Client[pgx.Tx]) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = c.Stop(ctx)
}

// riverBurnDown is pgcoordBurnDown with a raw River client.
func riverBurnDown(ctx context.Context, pool *pgxpool.Pool, opts Options, tag string, n int, s *riverSettings) (float64, error) {
	return riverBurnDownArgs(ctx, pool, opts, tag, n, s, false)
}

// riverBurnDownArgs is riverBurnDown; envelope queues jobs whose args have
// pgcoord's shape (envelopeArgs) and pgcoord's max_attempts.
func riverBurnDownArgs(ctx context.Context, pool *pgxpool.Pool, opts Options, tag string, n int, s *riverSettings, envelope bool) (float64, error) {
	var processed atomic.Int64
	done := make(chan struct{})
	c, name, err := newRiver(pool, opts, sanitizeTag(tag), s, func() {
		if processed.Add(1) == int64(n) {
			close(done)
		}
	})
	if err != nil {
		return 0, err
	}
	for lo := 0; lo < n; lo += queueBatch {
		batch := make([]river.InsertManyParams, 0, queueBatch)
		for i := lo; i < min(lo+queueBatch, n); i++ {
			p := river.InsertManyParams{Args: benchArgs{I: i}, InsertOpts: &river.InsertOpts{Queue: name}}
			if envelope {
				p.Args = envelopeArgs{Channel: "noop", Payload: i}
				p.InsertOpts.MaxAttempts = 1 + queue.DefaultMaxRescues
			}
			batch = append(batch, p)
		}
		if _, err := c.InsertMany(ctx, batch); err != nil {
			return 0, err
		}
	}
	t0 := time.Now()
	if err := c.Start(ctx); err != nil {
		return 0, err
	}
	defer stopRiver(c)
	select {
	case <-done:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}

// interleavedLatency runs one pgcoord instance and one River client side by
// side and publishes n messages to each, back to back (each once the
// previous one started), alternating sides every 25 messages so both sides
// see the same load on a shared machine. It returns each side's publish→start latencies.
func interleavedLatency(ctx context.Context, pool *pgxpool.Pool, opts Options, tag string, n int, s *riverSettings) (Sample, Sample, error) {
	tag = sanitizeTag(tag)
	q, err := newPgcoord(pool, opts, tag)
	if err != nil {
		return nil, nil, err
	}
	defer stopQueue(q)
	pStarted := make(chan time.Time, 1)
	if err := q.Subscribe(ctx, "lat", queue.Consumer{Concurrency: queueWorkers, Process: func(context.Context, queue.Message) error {
		pStarted <- time.Now()
		return nil
	}}); err != nil {
		return nil, nil, err
	}
	if err := q.Start(ctx); err != nil {
		return nil, nil, err
	}

	rStarted := make(chan time.Time, 1)
	c, name, err := newRiver(pool, opts, tag, s, func() { rStarted <- time.Now() })
	if err != nil {
		return nil, nil, err
	}
	if err := c.Start(ctx); err != nil {
		return nil, nil, err
	}
	defer stopRiver(c)

	// Alternate in chunks: within a chunk each side's messages follow each
	// other (back to back on that side alone, as a user would see them);
	// alternating chunks spreads the machine's load changes over both sides.
	const chunk = 25
	pLat, rLat := make(Sample, 0, n), make(Sample, 0, n)
	for lo := 0; lo < n; lo += chunk {
		for i := lo; i < min(lo+chunk, n); i++ {
			d, err := oneLatency(ctx, i, pStarted, func() error {
				_, err := q.Publish(ctx, "lat", i, nil)
				return err
			})
			if err != nil {
				return nil, nil, err
			}
			pLat = append(pLat, d)
		}
		for i := lo; i < min(lo+chunk, n); i++ {
			d, err := oneLatency(ctx, i, rStarted, func() error {
				_, err := c.Insert(ctx, benchArgs{I: i}, &river.InsertOpts{Queue: name})
				return err
			})
			if err != nil {
				return nil, nil, err
			}
			rLat = append(rLat, d)
		}
	}
	return pLat, rLat, nil
}

func oneLatency(ctx context.Context, i int, started <-chan time.Time, publish func() error) (time.Duration, error) {
	t0 := time.Now()
	if err := publish(); err != nil {
		return 0, err
	}
	select {
	case t := <-started:
		return t.Sub(t0), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(30 * time.Second):
		return 0, fmt.Errorf("bench: message %d never started", i)
	}
}

// sanitizeTag keeps River queue names valid (lowercase letters, digits, _).
func sanitizeTag(tag string) string {
	b := []byte(tag)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}
