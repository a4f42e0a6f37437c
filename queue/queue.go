package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgcoord/pgcoord/internal/ident"
	"github.com/pgcoord/pgcoord/internal/lifecycle"
	"github.com/pgcoord/pgcoord/internal/liveness"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"github.com/riverqueue/rivercontrib/otelriver"

	"github.com/pgcoord/pgcoord/internal/schema"

	"github.com/pgcoord/pgcoord/internal/connname"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Defaults of [Config] and [Consumer].
const (
	// DefaultAppName is NocoBase's main application name.
	DefaultAppName = ident.DefaultAppName
	// DefaultTimeout is a message's processing timeout (NocoBase's
	// QUEUE_DEFAULT_ACK_TIMEOUT).
	DefaultTimeout = 15 * time.Second
	// DefaultRetryBackoff is the wait before a failed message is retried
	// (NocoBase's 500 ms).
	DefaultRetryBackoff = 500 * time.Millisecond
	// DefaultRescueAfter was the age after which River's rescuer handed a
	// running message to another instance.
	//
	// Deprecated: rescue is by liveness ([RescueBound]); Config.RescueAfter
	// has no effect.
	DefaultRescueAfter = time.Minute
	// riverRescueNever keeps River's own age-based rescuer out of reach (it
	// is disabled in the driver as well, see gatedExecutor.JobGetStuck).
	riverRescueNever = 100 * 365 * 24 * time.Hour
	// DefaultMaxRescues is how many times a message whose worker died is
	// retried without charging its MaxRetries.
	DefaultMaxRescues = 3
	// DefaultPollInterval is how often a consumer looks for messages when no
	// NOTIFY woke it (River's FetchPollInterval default).
	DefaultPollInterval = time.Second
	// DefaultMaxPayloadBytes caps an encoded payload.
	DefaultMaxPayloadBytes = 1 << 20
	// DefaultConcurrency is a consumer's Concurrency when it sets none
	// (NocoBase's default): one message at a time per instance.
	DefaultConcurrency = 1
	// MaxConcurrency is the largest per-instance Concurrency, River's
	// QueueNumWorkersMax.
	MaxConcurrency = river.QueueNumWorkersMax

	// minFetchCooldown is River's floor for FetchCooldown.
	minFetchCooldown = river.FetchCooldownMin
	// maxDerivedFetchCooldown caps the cooldown derived from Concurrency.
	maxDerivedFetchCooldown = 20 * time.Millisecond
	// cooldownPerWorker derives a channel's fetch cooldown from its
	// Concurrency: Concurrency / cooldown stays at 50,000 claims per second.
	cooldownPerWorker = 20 * time.Microsecond
	// StopGrace is how long [EventQueue.Stop] may run past the end of its
	// ctx: half of it waiting for the cancelled messages to return, the rest
	// handing back the ones that did not.
	StopGrace = 2 * time.Second
	// maxMaxRescues keeps max_attempts (a smallint) in range.
	maxMaxRescues = 1000
	// placeholderQueue exists only so River builds a working (not insert-only)
	// client; it is removed before Start and never fetched.
	placeholderQueue = "pgcoord_placeholder"
)

// Config configures an [EventQueue]. The zero value is usable.
type Config struct {
	// AppName namespaces channels: a channel maps to a River queue derived
	// from AppName and the channel, unless the consumer is Shared. Defaults to
	// [DefaultAppName].
	AppName string
	// InstanceID identifies this instance (River's client ID, recorded in
	// each attempt's attempted_by). It must be unique among running
	// instances, at most 100 bytes. Defaults to host-pid-random.
	InstanceID string
	// Schema holds River's tables. Defaults to [schema.Default].
	Schema string
	// Logger receives logs with channel, message_id and attempt attributes.
	// Defaults to slog.Default().
	Logger *slog.Logger
	// DefaultTimeout is the processing timeout of messages published without
	// one. Defaults to [DefaultTimeout].
	DefaultTimeout time.Duration
	// RetryBackoff is the wait before a failed message becomes available
	// again. A retry starts at the first fetch after that (a NOTIFY-less poll:
	// at most the consumer's PollInterval later). Defaults to
	// [DefaultRetryBackoff].
	RetryBackoff time.Duration
	// RescueAfter has no effect: a running message is handed to another
	// instance when, and only when, the instance running it is dead (its
	// liveness session gone for RescueGrace), whatever its age.
	//
	// Deprecated: rescue is by liveness; see the package documentation.
	RescueAfter time.Duration
	// MaxRescues is how many rescues of a message (its worker died) are
	// allowed on top of its MaxRetries; a rescue never counts as a failed
	// attempt. -1 means none. Defaults to [DefaultMaxRescues].
	MaxRescues int
	// FetchCooldown, when set, is the minimum time between two fetches of one
	// channel on this instance, for every channel, and between two insert
	// NOTIFYs per channel from this instance. Zero derives it per channel from
	// Concurrency (see the package documentation), and uses River's minimum
	// (1 ms) for insert NOTIFYs.
	FetchCooldown time.Duration
	// MaxPayloadBytes caps an encoded payload. Defaults to
	// [DefaultMaxPayloadBytes].
	MaxPayloadBytes int
	// MeterProvider receives the queue's instruments (pgcoord.queue.*, see
	// docs/observability.md) and River's own (river.*, through the otelriver
	// middleware). Defaults to otel.GetMeterProvider() (a no-op until the
	// application installs an SDK).
	MeterProvider metric.MeterProvider
	// TracerProvider receives River's insert and work spans (otelriver); the
	// publisher's W3C trace context travels in the job's metadata, and the
	// work span links to it. Defaults to otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
}

func (c *Config) withDefaults() Config {
	var out Config
	if c != nil {
		out = *c
	}
	ident.Shared{AppName: &out.AppName, InstanceID: &out.InstanceID, Schema: &out.Schema, Logger: &out.Logger}.Defaults()
	out.DefaultTimeout = cmp.Or(out.DefaultTimeout, DefaultTimeout)
	out.RetryBackoff = cmp.Or(out.RetryBackoff, DefaultRetryBackoff)
	out.MaxPayloadBytes = cmp.Or(out.MaxPayloadBytes, DefaultMaxPayloadBytes)
	switch out.MaxRescues {
	case 0:
		out.MaxRescues = DefaultMaxRescues
	case -1:
		out.MaxRescues = 0
	}
	return out
}

func (c *Config) validate() error {
	if err := (ident.Shared{AppName: &c.AppName, InstanceID: &c.InstanceID, Schema: &c.Schema, Logger: &c.Logger}).Validate("Config"); err != nil {
		return invalidf("%v", err)
	}
	switch {
	case c.DefaultTimeout < 0:
		return invalidf("Config.DefaultTimeout %s is negative", c.DefaultTimeout)
	case c.RetryBackoff < 0:
		return invalidf("Config.RetryBackoff %s is negative", c.RetryBackoff)
	case c.MaxRescues < 0 || c.MaxRescues > maxMaxRescues:
		return invalidf("Config.MaxRescues %d is outside -1..%d", c.MaxRescues, maxMaxRescues)
	case c.FetchCooldown != 0 && c.FetchCooldown < minFetchCooldown:
		return invalidf("Config.FetchCooldown %s is below River's minimum %s", c.FetchCooldown, minFetchCooldown)
	case c.MaxPayloadBytes < 0:
		return invalidf("Config.MaxPayloadBytes %d is negative", c.MaxPayloadBytes)
	}
	return nil
}

// EventQueue is one instance's handle on the cluster's durable event queue:
// it publishes messages and consumes the channels it subscribed, through one
// River client. It is safe for concurrent use.
type EventQueue struct {
	cfg    Config
	pool   *pgxpool.Pool
	client *river.Client[pgx.Tx]
	logger *slog.Logger
	// jobTable is the sanitized, schema-qualified river_job identifier, built
	// once from the validated Config.Schema.
	jobTable string
	// handBackSQL is handBackQuery for Config.Schema; insertTopic is River's
	// insert NOTIFY channel there; the rest are rescueQueries.
	handBackSQL   string
	insertTopic   string
	candidatesSQL string
	rescueSQL     string
	fenceSQL      string
	// clock is this instance's wall clock (time.Now; a skewed one in tests).
	// It only measures distances from now, which are moved to the database
	// clock before they are stored.
	clock func() time.Time

	// live is the liveness session (set by Start, before River starts);
	// rescuerCancel and background own the rescuer and the liveness
	// watcher goroutines.
	live          *liveness.Session
	rescuerCancel context.CancelFunc
	background    sync.WaitGroup
	rescueScans   atomic.Int64
	// jobScans counts the rescue scans that read the job table.
	jobScans atomic.Int64
	// rescuing is closed when this instance first becomes the rescuer;
	// scanned is closed and replaced (under scanMu) after every scan.
	rescuing chan struct{}
	scanMu   sync.Mutex
	scanned  chan struct{}

	// mu serialises lifecycle transitions and Subscribe/Unsubscribe.
	mu sync.Mutex
	// life is the Start/Stop state (transitions under mu); once Stop began
	// nothing new may be subscribed.
	life lifecycle.State

	// byChannel and byQueue index the subscriptions by channel and by River
	// queue name. They are read on hot paths (every publish, fetch and
	// message) under subsMu.RLock and written under subsMu with mu held.
	subsMu    sync.RWMutex
	byChannel map[string]*subscription
	byQueue   map[string]*subscription

	// runMu guards running and abandoned. running holds the attempt (and
	// the ctx cancel) of every message whose Process runs on this
	// instance, by message id;
	// abandoned holds those that Stop handed back while their Process still
	// ran: whatever that Process returns later is dropped (see
	// gatedExecutor.JobSetStateIfRunningMany), since the message may already
	// run elsewhere.
	// claims holds, by message id, the attempt and liveness epoch of every
	// message this instance claimed whose outcome is not written yet.
	runMu     sync.Mutex
	running   map[int64]runningMsg
	abandoned map[int64]int
	claims    map[int64]claim

	// closed is set when Stop has returned: every call returns ErrClosed.
	closed atomic.Bool
	// otel holds the instruments (telemetry.go); its depth callback is
	// unregistered by Stop.
	otel *telemetry
}

// New returns an EventQueue on pool. It does not touch the database: call
// [EventQueue.Start] to consume. Publishing works before Start.
func New(pool *pgxpool.Pool, cfg *Config) (*EventQueue, error) {
	return newQueue(pool, cfg, nil)
}

// newQueue is New; a non-nil clock replaces this instance's wall clock, for
// River too (tests of clock skew).
func newQueue(pool *pgxpool.Pool, cfg *Config, clock func() time.Time) (*EventQueue, error) {
	if pool == nil {
		return nil, invalidf("nil pool")
	}
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	q := &EventQueue{
		cfg:      c,
		pool:     pool,
		logger:   c.Logger,
		jobTable: pgx.Identifier{c.Schema, "river_job"}.Sanitize(),
		// River's notifier LISTENs on "<schema>.river_insert".
		handBackSQL: handBackQuery(c.Schema),
		insertTopic: c.Schema + ".river_insert",
		byChannel:   make(map[string]*subscription),
		byQueue:     make(map[string]*subscription),
		running:     make(map[int64]runningMsg),
		abandoned:   make(map[int64]int),
		claims:      make(map[int64]claim),
		rescuing:    make(chan struct{}),
		scanned:     make(chan struct{}),
		clock:       clock,
	}
	q.otel = newTelemetry(q, c.MeterProvider)
	if q.clock == nil {
		q.clock = time.Now
	}
	q.candidatesSQL, q.rescueSQL, q.fenceSQL = rescueQueries(c.Schema)

	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, &worker{q: q}); err != nil {
		return nil, fmt.Errorf("queue: register worker: %w", err)
	}
	notifyCooldown := cmp.Or(c.FetchCooldown, minFetchCooldown)
	var test river.TestConfig
	if clock != nil {
		test.Time = clockGenerator(clock)
	}
	client, err := river.NewClient(&gatedDriver{Driver: riverpgxv5.New(pool), q: q}, &river.Config{
		Test:   test,
		ID:     c.InstanceID,
		Schema: c.Schema,
		Logger: c.Logger,
		// FetchCooldown at client level is the debounce of the NOTIFY sent on
		// insert (per channel, per publishing instance): River's 100 ms default
		// makes a message published within 100 ms of another wait for the
		// consumers' next poll. Channels set their own fetch settings.
		FetchCooldown:        notifyCooldown,
		FetchPollInterval:    max(DefaultPollInterval, notifyCooldown),
		JobTimeout:           c.DefaultTimeout,
		RescueStuckJobsAfter: riverRescueNever,
		RetryPolicy:          &retryPolicy{backoff: c.RetryBackoff, clock: q.clock},
		Workers:              workers,
		// otelriver gives River's own insert and work spans and river.*
		// metrics; the trace context of the publishing span travels in the
		// job's metadata (never in args, the user's payload) and the work
		// span links to it.
		Middleware: []rivertype.Middleware{otelriver.NewMiddleware(&otelriver.MiddlewareConfig{
			EnableSemanticMetrics:  true,
			EnableTracePropagation: true,
			MeterProvider:          c.MeterProvider,
			TracerProvider:         c.TracerProvider,
		})},
		// River only builds a working client when it has a queue; channels are
		// added and removed at run time, so start with a placeholder and
		// remove it below.
		Queues: map[string]river.QueueConfig{placeholderQueue: {MaxWorkers: 1}},
	})
	if err != nil {
		return nil, fmt.Errorf("queue: river client: %w", err)
	}
	if err := client.Queues().Remove(context.Background(), placeholderQueue); err != nil {
		return nil, fmt.Errorf("queue: river client: %w", err)
	}
	q.client = client
	q.life.Errors(ErrClosed, ErrAlreadyStarted)
	return q, nil
}

// InstanceID returns this instance's id (River's client id).
func (q *EventQueue) InstanceID() string { return q.cfg.InstanceID }

// Running reports whether the queue consumes (started, not stopping) and
// its liveness session holds this instance's lock, as far as the session
// knows (it pings every 250 ms): a consumer whose session is lost may be
// rescued by others. It is what App.Health reports for the queue.
func (q *EventQueue) Running() bool {
	q.mu.Lock()
	live := q.live
	q.mu.Unlock()
	if !q.life.Started() || live == nil {
		return false
	}
	_, ok, _ := live.State()
	return ok
}

// Start checks that PostgreSQL answers and starts consuming every subscribed
// channel. Starting twice returns ErrAlreadyStarted; starting after Stop
// returns ErrClosed; after a failed Start it may be called again. ctx bounds
// only the start: cancelling it later does not stop the queue.
func (q *EventQueue) Start(ctx context.Context) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := q.life.BeginStart(); err != nil {
		return err
	}
	// mu keeps Stop out until Start returns: EndStart cannot see it.
	return q.life.EndStart(q.start(ctx), nil)
}

// start is Start's work, under mu.
func (q *EventQueue) start(ctx context.Context) error {
	if err := q.pool.Ping(ctx); err != nil {
		return fmt.Errorf("queue: start: %w", err)
	}
	// Once per Start: an unmigrated or newer schema is a typed error
	// (migrations.ErrSchemaOutdated / ErrSchemaTooNew), not a raw SQL error.
	if err := schema.Check(ctx, q.pool, q.cfg.Schema); err != nil {
		return fmt.Errorf("queue: start: %w", err)
	}
	live, err := liveness.Start(ctx, q.pool, liveness.Config{Namespace: q.cfg.Schema, ID: q.cfg.InstanceID,
		AppName: q.cfg.AppName, Role: connname.RoleQueueLiveness, Logger: q.logger})
	if errors.Is(err, liveness.ErrInUse) {
		return fmt.Errorf("%w: %q", ErrInstanceIDInUse, q.cfg.InstanceID)
	}
	if err != nil {
		return fmt.Errorf("queue: start: %w", err)
	}
	q.live = live
	// River stops softly when its Start context ends; the queue's life is
	// bounded by Stop instead.
	if err := q.client.Start(context.WithoutCancel(ctx)); err != nil {
		live.Close()
		return fmt.Errorf("queue: start: %w", err)
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	q.rescuerCancel = cancel
	q.background.Add(2)
	go func() { defer q.background.Done(); q.runRescuer(rctx) }()
	go func() { defer q.background.Done(); q.watchLiveness(rctx) }()
	return nil
}

// Stop stops taking messages and waits, while the database is still open, for
// the running ones to finish. When ctx ends first, their contexts are
// cancelled; a message interrupted that way goes back to the queue without
// being charged an attempt. Stop then waits at most [StopGrace] more: a
// message whose Process has not returned by half of it (it ignores its ctx)
// is abandoned: handed back to the queue at once (available to every
// instance, not charged an attempt) and whatever its Process returns later
// is dropped. Stop then returns ctx's error. Messages still queued stay
// queued for other or later instances. During Stop, Publish still works (a
// running message may publish); once Stop returned, every call returns
// ErrClosed. Stop is safe to call twice and before Start.
func (q *EventQueue) Stop(ctx context.Context) error {
	q.mu.Lock()
	first, started := q.life.BeginStop()
	q.mu.Unlock()
	if !first {
		return nil
	}
	defer q.closed.Store(true)
	defer func() { _ = q.otel.reg.Unregister() }()
	if !started {
		return nil
	}
	// Last, once no message of this instance runs or all were handed back:
	// the session's end makes them look dead to the rescuer.
	defer func() {
		q.rescuerCancel()
		q.background.Wait()
		q.live.Close()
	}()
	err := q.client.Stop(ctx)
	if err == nil {
		return nil
	}
	// Every wait from here on is bounded by StopGrace past ctx's end, on
	// contexts of their own: ctx has ended.
	graceEnd := time.Now().Add(StopGrace)
	q.logger.WarnContext(ctx, "queue: stop deadline reached, cancelling running messages", slog.String("instance_id", q.cfg.InstanceID))
	cancelCtx, cancel := context.WithDeadline(context.WithoutCancel(ctx), graceEnd.Add(-StopGrace/2))
	defer cancel()
	if q.client.StopAndCancel(cancelCtx) == nil {
		return fmt.Errorf("queue: stop: %w", err)
	}
	// Some Process ignores its ctx. River's client finishes stopping when it
	// returns; this instance no longer waits for it.
	handBackCtx, cancel := context.WithDeadline(context.WithoutCancel(ctx), graceEnd)
	defer cancel()
	n, handErr := q.abandonRunning(handBackCtx)
	q.logger.WarnContext(ctx, "queue: stop abandoned messages whose Process ignored its cancelled ctx; handed back to the queue",
		slog.String("instance_id", q.cfg.InstanceID), slog.Int("messages", n))
	if handErr != nil {
		return fmt.Errorf("queue: stop: %w (handing back %d abandoned messages failed: %v)", err, n, handErr)
	}
	return fmt.Errorf("queue: stop: %w (%d messages abandoned and handed back)", err, n)
}

// abandonRunning marks every message whose Process still runs here as
// abandoned and hands it back to the queue: state available (cancelled if
// a Cancel is pending), the attempt not charged, and a NOTIFY so that
// consumers claim it at once. A message another attempt already moved on
// is left alone. It returns how many messages were abandoned.
func (q *EventQueue) abandonRunning(ctx context.Context) (int, error) {
	q.runMu.Lock()
	ids := make([]int64, 0, len(q.running))
	attempts := make([]int32, 0, len(q.running))
	for id, r := range q.running {
		q.abandoned[id] = r.attempt
		ids = append(ids, id)
		attempts = append(attempts, int32(r.attempt))
	}
	q.runMu.Unlock()
	if len(ids) == 0 {
		return 0, nil
	}
	_, err := q.pool.Exec(ctx, q.handBackSQL, ids, attempts, q.cfg.InstanceID, q.insertTopic)
	return len(ids), err
}

// handBackQuery returns the statement that hands abandoned messages back:
// $1 ids, $2 their attempts, $3 the instance that ran them, $4 River's
// insert NOTIFY channel. Only a row still running the same attempt on the
// same instance changes; River's interrupted-job rule is mirrored: back to
// available, now (database time), attempt not charged, or cancelled when a
// Cancel came meanwhile.
func handBackQuery(schema string) string {
	job := pgx.Identifier{schema, "river_job"}.Sanitize()
	state := pgx.Identifier{schema, "river_job_state"}.Sanitize()
	return `
		WITH input AS (
			SELECT unnest($1::bigint[]) AS id, unnest($2::int[]) AS attempt
		), moved AS (
			UPDATE ` + job + ` AS j SET
				state = CASE WHEN j.metadata ? 'cancel_attempted_at' THEN 'cancelled' ELSE 'available' END::` + state + `,
				finalized_at = CASE WHEN j.metadata ? 'cancel_attempted_at' THEN now() ELSE j.finalized_at END,
				attempt = CASE WHEN j.metadata ? 'cancel_attempted_at' THEN j.attempt ELSE greatest(j.attempt - 1, 0) END,
				scheduled_at = CASE WHEN j.metadata ? 'cancel_attempted_at' THEN j.scheduled_at ELSE now() END
			FROM input
			WHERE j.id = input.id AND j.attempt = input.attempt AND j.state = 'running'
				AND j.attempted_by[cardinality(j.attempted_by)] = $3
			RETURNING j.queue, j.state
		)
		SELECT pg_notify($4, json_build_object('queue', queue)::text)
		FROM (SELECT DISTINCT queue FROM moved WHERE state = 'available') AS woken`
}

// runningMsg is a message whose Process runs on this instance.
type runningMsg struct {
	attempt int
	// cancel cancels its Process ctx (with ErrLivenessLost).
	cancel context.CancelCauseFunc
}

// startRunning records that Process of message id (attempt) runs on this
// instance with ctx cancel; the returned func forgets it.
func (q *EventQueue) startRunning(id int64, attempt int, cancel context.CancelCauseFunc) func() {
	q.runMu.Lock()
	q.running[id] = runningMsg{attempt: attempt, cancel: cancel}
	q.runMu.Unlock()
	return func() {
		q.runMu.Lock()
		delete(q.running, id)
		q.runMu.Unlock()
	}
}

func (q *EventQueue) checkOpen() error {
	if q.closed.Load() {
		return ErrClosed
	}
	return nil
}

// retryPolicy schedules every retry RetryBackoff after the failure, like
// NocoBase's 500 ms, instead of River's attempt^4 seconds. The time is on
// this instance's clock, as River expects; it is moved to the database
// clock before it is stored (EventQueue.setOutcomes).
type retryPolicy struct {
	backoff time.Duration
	clock   func() time.Time
}

func (p *retryPolicy) NextRetry(*rivertype.JobRow) time.Time { return p.clock().Add(p.backoff) }

// clockGenerator is River's time source on a given clock. NowOrNil is nil:
// River's queries keep the database's now(), as in production.
type clockGenerator func() time.Time

func (g clockGenerator) Now() time.Time       { return g() }
func (g clockGenerator) NowOrNil() *time.Time { return nil }

var _ river.ClientRetryPolicy = (*retryPolicy)(nil)
