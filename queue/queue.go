package queue

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgcoord/pgcoord/internal/instanceid"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/pgcoord/pgcoord/migrations"
)

// Defaults of [Config] and [Consumer].
const (
	// DefaultAppName is NocoBase's main application name.
	DefaultAppName = "main"
	// DefaultTimeout is a message's processing timeout (NocoBase's
	// QUEUE_DEFAULT_ACK_TIMEOUT).
	DefaultTimeout = 15 * time.Second
	// DefaultRetryBackoff is the wait before a failed message is retried
	// (NocoBase's 500 ms).
	DefaultRetryBackoff = 500 * time.Millisecond
	// DefaultRescueAfter is how long a message may stay running before it is
	// considered abandoned by a dead worker and handed to another instance.
	DefaultRescueAfter = time.Minute
	// DefaultMaxRescues is how many times a message whose worker died is
	// retried without charging its MaxRetries.
	DefaultMaxRescues = 3
	// DefaultPollInterval is how often a consumer looks for messages when no
	// NOTIFY woke it (River's FetchPollInterval default).
	DefaultPollInterval = time.Second
	// DefaultMaxPayloadBytes caps an encoded payload.
	DefaultMaxPayloadBytes = 1 << 20
	// MaxConcurrency is the largest per-instance Concurrency, River's
	// QueueNumWorkersMax; Concurrency 0 (unlimited) maps to it.
	MaxConcurrency = river.QueueNumWorkersMax

	// minFetchCooldown is River's floor for FetchCooldown.
	minFetchCooldown = river.FetchCooldownMin
	// maxDerivedFetchCooldown caps the cooldown derived from Concurrency.
	maxDerivedFetchCooldown = 20 * time.Millisecond
	// cooldownPerWorker derives a channel's fetch cooldown from its
	// Concurrency: Concurrency / cooldown stays at 50,000 claims per second.
	cooldownPerWorker = 20 * time.Microsecond
	// hardStopWait bounds how long Stop waits for cancelled messages to return
	// once ctx has ended.
	hardStopWait = 10 * time.Second
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
	// Schema holds River's tables. Defaults to [migrations.DefaultSchema].
	Schema string
	// Logger receives logs with channel, message_id and attempt attributes.
	// Defaults to warnings and above on stderr.
	Logger *slog.Logger
	// DefaultTimeout is the processing timeout of messages published without
	// one. Defaults to [DefaultTimeout].
	DefaultTimeout time.Duration
	// RetryBackoff is the wait before a failed message becomes available
	// again. A retry starts at the first fetch after that (a NOTIFY-less poll:
	// at most the consumer's PollInterval later). Defaults to
	// [DefaultRetryBackoff].
	RetryBackoff time.Duration
	// RescueAfter is how long a message may stay running before River's
	// rescuer (on the elected leader instance, every 30 s) hands it to another
	// instance; a message is never rescued before its own timeout has passed.
	// Must be at least DefaultTimeout. Defaults to [DefaultRescueAfter].
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
}

func (c *Config) withDefaults() Config {
	var out Config
	if c != nil {
		out = *c
	}
	out.AppName = cmp.Or(out.AppName, DefaultAppName)
	out.Schema = cmp.Or(out.Schema, migrations.DefaultSchema)
	out.DefaultTimeout = cmp.Or(out.DefaultTimeout, DefaultTimeout)
	out.RetryBackoff = cmp.Or(out.RetryBackoff, DefaultRetryBackoff)
	out.RescueAfter = cmp.Or(out.RescueAfter, DefaultRescueAfter)
	out.MaxPayloadBytes = cmp.Or(out.MaxPayloadBytes, DefaultMaxPayloadBytes)
	switch out.MaxRescues {
	case 0:
		out.MaxRescues = DefaultMaxRescues
	case -1:
		out.MaxRescues = 0
	}
	if out.InstanceID == "" {
		out.InstanceID = instanceid.New()
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return out
}

func (c *Config) validate() error {
	if err := migrations.ValidateSchema(c.Schema); err != nil {
		return fmt.Errorf("queue: Config.Schema: %w", err)
	}
	switch {
	case len(c.InstanceID) > 100:
		return invalidf("Config.InstanceID is longer than 100 bytes")
	case c.DefaultTimeout < 0:
		return invalidf("Config.DefaultTimeout %s is negative", c.DefaultTimeout)
	case c.RetryBackoff < 0:
		return invalidf("Config.RetryBackoff %s is negative", c.RetryBackoff)
	case c.RescueAfter < c.DefaultTimeout:
		return invalidf("Config.RescueAfter %s is shorter than DefaultTimeout %s", c.RescueAfter, c.DefaultTimeout)
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

	// mu serialises lifecycle transitions and Subscribe/Unsubscribe; it
	// guards started.
	mu      sync.Mutex
	started bool

	// byChannel and byQueue index the subscriptions by channel and by River
	// queue name. They are read on hot paths (every publish, fetch and
	// message) under subsMu.RLock and written under subsMu with mu held.
	subsMu    sync.RWMutex
	byChannel map[string]*subscription
	byQueue   map[string]*subscription

	// stopping is set when Stop begins: nothing new may be subscribed.
	// closed is set when Stop has returned: every call returns ErrClosed.
	stopping atomic.Bool
	closed   atomic.Bool
}

// New returns an EventQueue on pool. It does not touch the database: call
// [EventQueue.Start] to consume. Publishing works before Start.
func New(pool *pgxpool.Pool, cfg *Config) (*EventQueue, error) {
	if pool == nil {
		return nil, invalidf("nil pool")
	}
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	q := &EventQueue{
		cfg:       c,
		pool:      pool,
		logger:    c.Logger,
		jobTable:  pgx.Identifier{c.Schema, "river_job"}.Sanitize(),
		byChannel: make(map[string]*subscription),
		byQueue:   make(map[string]*subscription),
	}

	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, &worker{q: q}); err != nil {
		return nil, fmt.Errorf("queue: register worker: %w", err)
	}
	notifyCooldown := cmp.Or(c.FetchCooldown, minFetchCooldown)
	client, err := river.NewClient(&gatedDriver{Driver: riverpgxv5.New(pool), q: q}, &river.Config{
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
		RescueStuckJobsAfter: c.RescueAfter,
		RetryPolicy:          &retryPolicy{backoff: c.RetryBackoff},
		Workers:              workers,
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
	return q, nil
}

// InstanceID returns this instance's id (River's client id).
func (q *EventQueue) InstanceID() string { return q.cfg.InstanceID }

// Start checks that PostgreSQL answers and starts consuming every subscribed
// channel. Starting twice is a no-op; starting after Stop returns ErrClosed.
// ctx bounds only the start: cancelling it later does not stop the queue.
func (q *EventQueue) Start(ctx context.Context) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopping.Load() {
		return ErrClosed
	}
	if q.started {
		return nil
	}
	if err := q.pool.Ping(ctx); err != nil {
		return fmt.Errorf("queue: start: %w", err)
	}
	// River stops softly when its Start context ends; the queue's life is
	// bounded by Stop instead.
	if err := q.client.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("queue: start: %w", err)
	}
	q.started = true
	return nil
}

// Stop stops taking messages and waits, while the database is still open, for
// the running ones to finish. When ctx ends first, their contexts are
// cancelled; a message interrupted that way goes back to the queue without
// being charged an attempt, and Stop returns ctx's error after the cancelled
// Process calls returned (or 10 s more passed). Messages still queued stay
// queued for other or later instances. During Stop, Publish still works (a
// running message may publish); once Stop returned, every call returns
// ErrClosed. Stop is safe to call twice and before Start.
func (q *EventQueue) Stop(ctx context.Context) error {
	q.mu.Lock()
	if q.stopping.Swap(true) {
		q.mu.Unlock()
		return nil
	}
	started := q.started
	q.mu.Unlock()
	defer q.closed.Store(true)
	if !started {
		return nil
	}
	err := q.client.Stop(ctx)
	if err == nil {
		return nil
	}
	q.logger.WarnContext(ctx, "queue: stop deadline reached, cancelling running messages", slog.String("instance_id", q.cfg.InstanceID))
	hardCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), hardStopWait)
	defer cancel()
	if hardErr := q.client.StopAndCancel(hardCtx); hardErr != nil {
		return fmt.Errorf("queue: stop: %w (running messages did not return after cancel: %v)", err, hardErr)
	}
	return fmt.Errorf("queue: stop: %w", err)
}

func (q *EventQueue) checkOpen() error {
	if q.closed.Load() {
		return ErrClosed
	}
	return nil
}

// retryPolicy schedules every retry RetryBackoff after the failure, like
// NocoBase's 500 ms, instead of River's attempt^4 seconds.
type retryPolicy struct{ backoff time.Duration }

func (p *retryPolicy) NextRetry(*rivertype.JobRow) time.Time { return time.Now().Add(p.backoff) }

var _ river.ClientRetryPolicy = (*retryPolicy)(nil)
