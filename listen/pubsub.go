package listen

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/pgcoord/pgcoord/internal/broadcast"
	"github.com/pgcoord/pgcoord/internal/ident"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/internal/lockkey"
	"github.com/pgcoord/pgcoord/internal/schema"
	"github.com/pgcoord/pgcoord/txhooks"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Defaults of [Config] and [SubscribeOpts].
const (
	// DefaultAppName is the application name when Config.AppName is empty
	// (NocoBase's main application is called "main").
	DefaultAppName = ident.DefaultAppName
	// DefaultMaxPayloadBytes caps the JSON encoding of one payload.
	DefaultMaxPayloadBytes = 1 << 20
	// DefaultRetention is how long a message stays in the log.
	DefaultRetention = 24 * time.Hour
	// DefaultPruneInterval is how often an instance tries to prune the log.
	DefaultPruneInterval = time.Minute
	// DefaultBufferSize is the number of messages a subscription buffers
	// before it overflows (and later recovers them from the log).
	DefaultBufferSize = 1024
	// DefaultPollInterval is how often the listener reads the log for
	// messages it did not get a notification for. The poll is also the
	// listener connection's health check.
	DefaultPollInterval = time.Second
	// DefaultReconnectMaxDelay caps the exponential backoff between
	// reconnection attempts of the listener.
	DefaultReconnectMaxDelay = 10 * time.Second
)

// queryTimeout bounds every statement on the listener connection: one that
// takes longer means the connection is dead or the server is stuck, and the
// listener reconnects.
const queryTimeout = 10 * time.Second

// Config configures a [PubSub]. The zero value of every field means its default.
type Config struct {
	// AppName namespaces every message: instances receive only messages of
	// their own app, so several apps share one database without crosstalk.
	// Defaults to DefaultAppName.
	AppName string

	// InstanceID identifies this instance as a sender, for skip-self and
	// only-self delivery. Two PubSubs must never share one. Defaults to
	// hostname-pid-random.
	InstanceID string

	// Schema holds the messages table. Defaults to schema.Default.
	Schema string

	// Logger receives warnings and errors. Defaults to slog.Default().
	Logger *slog.Logger

	// MaxPayloadBytes caps the JSON encoding of a payload; Publish returns
	// ErrPayloadTooLarge above it. Defaults to DefaultMaxPayloadBytes.
	MaxPayloadBytes int

	// Retention is how long messages stay in the log after their commit
	// (see the package documentation for the bounds). A listener that is
	// disconnected for longer than Retention can miss messages. Defaults to
	// DefaultRetention.
	Retention time.Duration

	// PruneInterval is how often this instance tries to delete messages older
	// than Retention (one instance of an app at a time). Negative disables
	// pruning. Defaults to DefaultPruneInterval.
	PruneInterval time.Duration

	// BufferSize is the default number of buffered messages per
	// subscription. Defaults to DefaultBufferSize.
	BufferSize int

	// PollInterval is how often the listener reads the log for messages it
	// was not notified of, and checks its connection. Defaults to
	// DefaultPollInterval.
	PollInterval time.Duration

	// ReconnectMaxDelay caps the backoff between reconnection attempts.
	// Defaults to DefaultReconnectMaxDelay.
	ReconnectMaxDelay time.Duration
	// MeterProvider receives the pub/sub and sync-message instruments
	// (pgcoord.listen.*, see docs/observability.md). Defaults to
	// otel.GetMeterProvider() (a no-op until the application installs an
	// SDK).
	MeterProvider metric.MeterProvider
	// TracerProvider receives a producer span per Publish / PublishTx
	// ("send <channel>") and a consumer span per handler call ("process
	// <channel>"). Publish and PublishTx carry the producer span's W3C
	// trace context in the message's headers (in its notification and its
	// log row), and the handler's span on every receiving instance is its
	// child, however the message reached it. Defaults to
	// otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
}

func (c *Config) withDefaults() Config {
	var out Config
	if c != nil {
		out = *c
	}
	ident.Shared{AppName: &out.AppName, InstanceID: &out.InstanceID, Schema: &out.Schema, Logger: &out.Logger}.Defaults()
	orDefault(&out.MaxPayloadBytes, DefaultMaxPayloadBytes)
	orDefault(&out.Retention, DefaultRetention)
	orDefault(&out.PruneInterval, DefaultPruneInterval)
	orDefault(&out.BufferSize, DefaultBufferSize)
	orDefault(&out.PollInterval, DefaultPollInterval)
	orDefault(&out.ReconnectMaxDelay, DefaultReconnectMaxDelay)
	return out
}

// orDefault sets *v to def when it is the zero value.
func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

func (c Config) validate() error {
	if err := (ident.Shared{AppName: &c.AppName, InstanceID: &c.InstanceID, Schema: &c.Schema, Logger: &c.Logger}).Validate("Config"); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	switch {
	case c.MaxPayloadBytes < 0:
		return fmt.Errorf("listen: Config.MaxPayloadBytes: must not be negative, got %d", c.MaxPayloadBytes)
	case c.Retention < 0:
		return fmt.Errorf("listen: Config.Retention: must not be negative, got %s", c.Retention)
	case c.BufferSize < 0:
		return fmt.Errorf("listen: Config.BufferSize: must not be negative, got %d", c.BufferSize)
	case c.PollInterval < 0:
		return fmt.Errorf("listen: Config.PollInterval: must not be negative, got %s", c.PollInterval)
	case c.ReconnectMaxDelay < 0:
		return fmt.Errorf("listen: Config.ReconnectMaxDelay: must not be negative, got %s", c.ReconnectMaxDelay)
	}
	return nil
}

func validName(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case !utf8.ValidString(s):
		return errors.New("not valid UTF-8")
	case strings.IndexByte(s, 0) >= 0:
		return errors.New("contains a NUL byte")
	}
	return nil
}

func validateChannel(channel string) error {
	if err := validName(channel); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidChannel, err)
	}
	return nil
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// Message is one delivered message.
type Message struct {
	// ID is the message's id in the log: unique within a database, it
	// increases with publication but not necessarily with commit order.
	ID int64
	// Channel is the logical channel it was published on.
	Channel string
	// Payload is the JSON text exactly as published.
	Payload json.RawMessage
	// Sender is the InstanceID of the publishing PubSub.
	Sender string
	// PublishedAt is the database time of the publishing transaction.
	PublishedAt time.Time
	// Headers is metadata sent beside the payload: the publisher's W3C trace
	// context (traceparent, tracestate) when it published (Publish or
	// PublishTx) inside a recording span. The log stores them too (schema
	// version 15), so a message read from the log by a catch-up or by id
	// has the same headers as one carried by its notification. nil when
	// there are none.
	Headers map[string]string
}

// Handler handles one message. ctx is cancelled when the PubSub closes. A
// returned error or a panic is logged and counted; it never stops delivery.
type Handler func(ctx context.Context, msg Message) error

// PublishOpts are per-publish options. A nil *PublishOpts means the defaults:
// every other instance of the app receives the message, the publisher does not.
type PublishOpts struct {
	// IncludeSelf also delivers the message to the publishing instance.
	IncludeSelf bool
	// OnlySelf delivers the message to the publishing instance only. It wins
	// over IncludeSelf.
	OnlySelf bool
}

// envelope is a message with its routing and ordering data.
type envelope struct {
	msg      Message
	headers  map[string]string // from a version 2 notification (see wire.go)
	xid      uint64
	skipSelf bool
	onlySelf bool
}

const (
	stateNew = iota
	stateStarted
	stateClosed
)

// PubSub is one instance's publish/subscribe endpoint. It is safe for
// concurrent use. See the package documentation for its guarantees.
type PubSub struct {
	pool   *pgxpool.Pool
	cfg    Config
	logger *slog.Logger

	table       string       // sanitized schema.messages
	physChannel string       // the app's NOTIFY channel: fixed format, never a user string
	pruneKey    int64        // the pruner election lock (internal/lockkey)
	lastMark    atomic.Int64 // unix nanoseconds of this instance's latest retention marker
	sql         statements
	// args holds the statement arguments that never change, boxed once
	// (a string in an interface is an allocation per statement).
	args struct{ app, sender, channel any }

	// ctx lives until Close; handlers and background goroutines use it.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.RWMutex // guards state, starting and subs
	state    int
	starting bool // Start is connecting
	subs     map[string]map[*Subscription]struct{}

	// led is the exactly-once ledger (see ledger.go).
	led *ledger

	// readTimeout bounds each read of the log and fetch on the listener
	// connection (queryTimeout; tests lower it).
	readTimeout time.Duration

	healthy     atomic.Bool                // set through setHealthy
	watch       broadcast.Signal           // see watch.go
	listenerPID atomic.Uint32              // backend pid of the current listener connection (for tests)
	pubMu       sync.Mutex                 // guards pubQ
	pubQ        publishQueue               // Publish group commit, see publisher.go
	wg          sync.WaitGroup             // listener, pruner and publish drainers
	running     map[*Subscription]struct{} // subscriptions whose goroutine runs; guarded by mu

	stats struct {
		published, delivered, caughtUp, dropped, recovered, lost, reconnects, switchovers, logReads, handlerErrors atomic.Int64
	}
	// tel holds the instruments (telemetry.go); Close unregisters its callback.
	tel *telemetry
}

type statements struct {
	publish, publishMany, publishTx, first, restarted, page, switched, fetch, prune, mark string
}

// New returns a PubSub for the instance whose pool is pool. It does not touch
// the database; call [PubSub.Start] to start receiving. Publishing works
// before Start.
func New(pool *pgxpool.Pool, cfg *Config) (*PubSub, error) {
	if pool == nil {
		return nil, errors.New("listen: nil pool")
	}
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	ps := &PubSub{
		pool:        pool,
		cfg:         c,
		logger:      c.Logger,
		table:       pgx.Identifier{c.Schema, "messages"}.Sanitize(),
		physChannel: NotifyChannel(c.Schema, c.AppName),
		subs:        map[string]map[*Subscription]struct{}{},
		led:         newLedger(),
		running:     map[*Subscription]struct{}{},
		readTimeout: queryTimeout,
		pruneKey:    lockkey.Key(c.Schema, lockkey.ListenPrune, c.AppName),
	}
	ps.sql = buildStatements(ps.table)
	ps.args.app, ps.args.sender, ps.args.channel = c.AppName, c.InstanceID, ps.physChannel
	ps.ctx, ps.cancel = context.WithCancel(context.Background())
	ps.tel = newTelemetry(ps, c.MeterProvider, c.TracerProvider)
	return ps, nil
}

// asyncCommit, in an autocommit Publish statement, makes its implicit
// transaction commit without waiting for its WAL record to be flushed
// (synchronous_commit off, local to that transaction: the session's setting
// is unchanged after it). The message is delivered at commit as before; a
// server crash may lose the last autocommit publishes not yet flushed (at
// most about 3 × wal_writer_delay, 600 ms by default), even after they were
// delivered. PublishTx never uses it: the caller's transaction keeps its own
// durability. See docs/failure-model.md.
const asyncCommit = `set_config('synchronous_commit', 'off', true)`

func buildStatements(t string) statements {
	const insert = `INSERT INTO %s (app, channel, sender, skip_self, only_self, payload)
		VALUES ($1, $2, $3, $4, $5, $6)
		RETURNING id, xid, published_at`
	const routing = ` AND (m.sender = $2 OR NOT m.only_self) AND (m.sender <> $2 OR NOT m.skip_self)`
	const head = `pg_current_snapshot()::text, (SELECT system_identifier FROM pg_control_system()), statement_timestamp(),
		NULL::bigint, NULL::text, NULL::text`
	return statements{
		// One statement: the row and the notification commit together. A
		// small message travels inline in the notification; a large one by
		// id (the listener reads the row). Its own (implicit) transaction
		// commits without waiting for the WAL flush (see asyncCommit).
		publish: `WITH m AS (` + fmt.Sprintf(insert, t) + `)
			SELECT id, xid, published_at, pg_notify($7, CASE WHEN $8::text = '' THEN ` + sqlRef + `
				ELSE 'I' || ` + sqlHead + ` || $8::text END), ` + asyncCommit + `
			FROM m`,
		// Several concurrent Publish calls of this instance in one
		// statement: one commit and one notification carrying all of them
		// (or a wake-up when they do not fit). The rows are inserted in
		// argument order, so their ids ascend in that order. $12 is the
		// messages' headers ('' for none), or NULL when none has any: the
		// column stays NULL.
		publishMany: `WITH m AS (
				INSERT INTO ` + t + ` (app, channel, sender, skip_self, only_self, payload, headers)
				SELECT $1, u.c, $2, u.s, u.o, u.p::json, NULLIF(u.h, '')::jsonb
				FROM unnest($3::text[], $4::bool[], $5::bool[], $6::text[], $12::text[]) WITH ORDINALITY AS u(c, s, o, p, h, n)
				ORDER BY u.n
				RETURNING id, xid, published_at
			), b AS (
				SELECT string_agg(` + sqlHead + ` || ($10::text[])[rn], '' ORDER BY id) AS body
				FROM (SELECT id, xid, published_at, row_number() OVER (ORDER BY id) AS rn FROM m) q
			), n AS (
				SELECT pg_notify($7, CASE WHEN $11 AND octet_length(b.body) <= $9 THEN $8::text || b.body ELSE 'W' END) FROM b
			), a AS (
				SELECT ` + asyncCommit + `
			)
			SELECT m.id, m.xid, m.published_at FROM m, n, a ORDER BY m.id`,
		// In a caller's transaction the notification is a constant wake-up:
		// PostgreSQL folds identical notifications of one transaction, so a
		// transaction that publishes many messages sends one NOTIFY. $8
		// is the message's headers, '' for none (NULL in the row).
		publishTx: `WITH m AS (INSERT INTO ` + t + ` (app, channel, sender, skip_self, only_self, payload, headers)
				VALUES ($1, $2, $3, $4, $5, $6, NULLIF($8::text, '')::jsonb)
				RETURNING id, xid, published_at)
			SELECT id, xid, published_at, pg_notify($7, 'W') FROM m`,
		// Every read of the log returns, in the same statement (so the
		// same snapshot), the snapshot, the server's identity and the
		// database time as a first row, then a page of rows in (xid, id)
		// order after the cursor ($5, $6), at most $7 of them (a caller
		// sorts the two branches' rows and keeps the first $7).
		// The first read also returns the log's newest row of the app (the
		// ledger's last row until it sees a newer one).
		first: `SELECT ` + head + `
			UNION ALL
			SELECT NULL, NULL, NULL, m.id, m.xid::text, m.channel FROM (SELECT id, xid, channel FROM ` + t + `
				WHERE app = $1 ORDER BY xid DESC, id DESC LIMIT 1) m`,
		// On every connection: the server's start time, and whether the
		// last row the ledger saw ($2, $3) is still in the log.
		restarted: `SELECT pg_postmaster_start_time(),
			EXISTS (SELECT FROM ` + t + ` WHERE app = $1 AND id = $2 AND xid = $3::text::xid8)`,
		// A catch-up reads the rows of the transactions that had not ended
		// in the previous snapshot: at or above its xmax, or in its xip
		// ($4, only those not before the cursor's), one transaction at a
		// time (each in (xid, id) order, which is the (app, xid, id) index's:
		// ordered by id alone the planner walked the primary key over the
		// whole log for an xid it could not estimate; a big transaction is
		// paged, not sorted;
		// and no row comparison, which would let the scan walk other
		// transactions' rows). ($3, $8) is the larger of the cursor and (xmax, -1): one
		// row comparison, so the index scan starts there (with a separate
		// xid bound it may start at the cursor and walk the backlog). Rows of transactions that had ended were read then, so
		// the cost does not grow with what was published since an old
		// xmin. A row whose xid is at or above the current xmax cannot be
		// this server's (a logically replicated copy of another cluster's
		// row): it is ignored.
		page: `SELECT ` + head + `
			UNION ALL
			SELECT NULL, NULL, NULL, p.id, p.xid::text, p.channel FROM (
				(SELECT m.id, m.xid, m.channel FROM ` + t + ` m
				WHERE m.app = $1 AND (m.xid, m.id) > ($3::text::xid8, $8::bigint)
					AND m.xid < pg_snapshot_xmax(pg_current_snapshot())` + routing + `
				ORDER BY m.xid, m.id LIMIT $7)
				UNION ALL
				(SELECT m.id, m.xid, m.channel FROM unnest($4::text[]::xid8[]) x(xid)
				CROSS JOIN LATERAL (SELECT m.id, m.xid, m.channel FROM ` + t + ` m
					WHERE m.app = $1 AND m.xid = x.xid
						AND m.id > CASE WHEN x.xid = $5::text::xid8 THEN $6::bigint ELSE -1 END` + routing + `
					ORDER BY m.xid, m.id LIMIT $7) m)
			) p`,
		// After a switchover: the new server's rows published since $3.
		switched: `SELECT ` + head + `
			UNION ALL
			SELECT NULL, NULL, NULL, p.id, p.xid::text, p.channel FROM (
				SELECT m.id, m.xid, m.channel FROM ` + t + ` m
				WHERE m.app = $1 AND m.published_at >= $3 AND m.xid < pg_snapshot_xmax(pg_current_snapshot())
					AND cardinality($4::text[]) >= 0 AND $8::bigint IS NOT NULL -- unused here
					AND (m.xid, m.id) > ($5::text::xid8, $6::bigint)` + routing + `
				ORDER BY m.xid, m.id LIMIT $7
			) p`,
		fetch: `SELECT id, xid, channel, sender, skip_self, only_self, payload::text, published_at, headers::text
			FROM ` + t + ` WHERE app = $1 AND id = ANY($2) ORDER BY xid, id`,
		// Retention counts from the commit, which no column records
		// (published_at is the transaction's start). A marker row (see
		// prune.go) records a snapshot and the time it was taken: every
		// transaction that snapshot sees as ended had ended by then. Only
		// rows of transactions ended in a marker older than Retention are
		// deleted, so only rows committed longer than Retention ago (a
		// transaction left open elsewhere holds back only its own rows).
		prune: `DELETE FROM ` + t + ` WHERE id IN (SELECT m.id FROM ` + t + ` m,
				(SELECT (mk.payload #>> '{}')::pg_snapshot AS s FROM ` + t + ` mk
					WHERE mk.app = $1 AND mk.sender = '' AND mk.channel = $4 AND mk.published_at < now() - $2::interval
					ORDER BY mk.published_at DESC LIMIT 1) mk
			WHERE m.app = $1 AND m.published_at < now() - $2::interval
				AND m.xid < pg_snapshot_xmax(mk.s) AND pg_visible_in_snapshot(m.xid, mk.s)
			LIMIT $3)`,
		// A marker: sender '' (no instance has it) and only_self, so no
		// listener delivers it; clock_timestamp() runs after the
		// statement's snapshot was taken.
		mark: `INSERT INTO ` + t + ` (app, channel, sender, skip_self, only_self, payload, published_at)
			VALUES ($1, $2, '', true, true, to_json(pg_current_snapshot()::text), clock_timestamp())`,
	}
}

// AppName returns the configured app name.
func (ps *PubSub) AppName() string { return ps.cfg.AppName }

// InstanceID returns this instance's sender id.
func (ps *PubSub) InstanceID() string { return ps.cfg.InstanceID }

// Start connects the listener, LISTENs on the app's channel and starts
// delivering to subscriptions, including those made before Start. It fails
// fast when PostgreSQL is not reachable or the messages table is missing.
// Messages committed before Start are never delivered to this instance.
// After Start returns, the listener reconnects by itself until Close.
func (ps *PubSub) Start(ctx context.Context) error {
	ps.mu.Lock()
	switch {
	case ps.state == stateClosed:
		ps.mu.Unlock()
		return ErrClosed
	case ps.state == stateStarted || ps.starting:
		ps.mu.Unlock()
		return ErrAlreadyStarted
	}
	ps.starting = true
	ps.mu.Unlock()

	l := newListener(ps)
	// Once per Start: an unmigrated or newer schema is a typed error
	// (migrations.ErrSchemaOutdated / ErrSchemaTooNew), not a raw SQL error.
	var conn *pgx.Conn
	err := schema.Check(ctx, ps.pool, ps.cfg.Schema)
	if err == nil {
		conn, _, err = l.connect(ctx, true, nil)
	}

	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.starting = false
	if err == nil && ps.state == stateClosed {
		err = ErrClosed
	}
	if err != nil {
		if conn != nil {
			_ = conn.Close(context.WithoutCancel(ctx))
		}
		return fmt.Errorf("listen: start: %w", err)
	}
	ps.state = stateStarted
	ps.setHealthy(true)
	ps.wg.Add(1)
	go func() {
		defer ps.wg.Done()
		l.run(conn)
	}()
	if ps.cfg.PruneInterval > 0 {
		ps.wg.Add(1)
		go func() {
			defer ps.wg.Done()
			ps.pruneLoop()
		}()
	}
	return nil
}

// Healthy reports whether the listener connection is up and its catch-up
// after the latest (re)connection has finished. It is false before Start,
// while reconnecting and after Close. While it is false, messages may reach
// this instance late (never lost: see [SubscribeOpts.OnResync]).
func (ps *PubSub) Healthy() bool { return ps.healthy.Load() }

// Close stops the listener and every subscription. Pending debounced calls
// are dropped; handlers that are running get a cancelled context, and Close
// waits for them to return, or for ctx to end (then it returns ctx's error
// and such a handler may still be running). When Close returns nil no
// handler is running or will run, except the one Close was called from:
// Close may be called from a handler or an OnResync callback (a "shut down"
// or "reload" message), on the handler's goroutine or on another one with
// the handler's context or one derived from it; it then stops everything
// else, returns without waiting for that handler, and the handler's
// subscription finishes when the handler returns. Close is safe to call
// twice and before Start; every other call after it returns ErrClosed.
func (ps *PubSub) Close(ctx context.Context) error {
	gid := goroutineID()
	ps.mu.Lock()
	if ps.state == stateClosed {
		ps.mu.Unlock()
		return nil
	}
	ps.state = stateClosed
	_ = ps.tel.reg.Unregister()
	var subs []*Subscription
	for _, set := range ps.subs {
		for s := range set {
			subs = append(subs, s)
		}
	}
	ps.subs = map[string]map[*Subscription]struct{}{}
	var wait []*Subscription // unsubscribed ones still running too
	for s := range ps.running {
		if !s.calledFrom(ctx, gid) {
			wait = append(wait, s)
		}
	}
	ps.mu.Unlock()

	ps.setHealthy(false)
	ps.cancel()
	for _, s := range subs {
		s.halt()
	}
	done := make(chan struct{})
	go func() {
		ps.wg.Wait()
		for _, s := range wait {
			<-s.done
		}
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("listen: close: %w", ctx.Err())
	}
}

func (ps *PubSub) closed() bool {
	ps.mu.RLock()
	defer ps.mu.RUnlock()
	return ps.state == stateClosed
}

// Stats are counters since New.
type Stats struct {
	// Published counts messages written by Publish and PublishTx (a
	// PublishTx whose transaction rolls back is counted too).
	Published int64
	// Delivered counts handler calls (a debounced burst counts once).
	Delivered int64
	// CaughtUp counts messages this instance found in the log instead of
	// through a notification: after a reconnect, by the poll, or for a
	// transaction that published several messages.
	CaughtUp int64
	// Dropped counts messages that did not fit a subscription's buffer.
	Dropped int64
	// Recovered counts dropped messages read back from the log and delivered.
	Recovered int64
	// Lost counts dropped messages that were no longer in the log when the
	// subscription recovered them (pruned after Retention).
	Lost int64
	// Reconnects counts successful reconnections of the listener.
	Reconnects int64
	// Switchovers counts the times the listener found itself on another
	// server than the one its watermark came from (another
	// system_identifier, or transaction ids below the watermark), or on a
	// restarted server without the last message it read (commits lost in a
	// crash or a failover): a blue/green or logical-replication switchover,
	// a restore, a DNS name moved. Each one is logged at WARN with the reason; see the package
	// documentation for what is void then.
	Switchovers int64
	// LogReads counts the statements that read the log (a catch-up, after a
	// wake-up, a poll or a reconnection, reads it in pages of a bounded
	// number of rows). Wake-ups already received are coalesced into one.
	LogReads int64
	// HandlerErrors counts handler calls that returned an error or panicked.
	HandlerErrors int64
	// LogReadAt is the database time (statement_timestamp) of the
	// listener's latest complete read of the log: what committed before it
	// has been handed to the subscriptions. A healthy listener reads at
	// least every PollInterval, so its lag, the database's now() minus
	// LogReadAt, stays under PollInterval plus one read; it grows while the
	// listener is disconnected or behind. Zero before Start.
	LogReadAt time.Time
}

// Stats returns a snapshot of the counters.
func (ps *PubSub) Stats() Stats {
	s := &ps.stats
	return Stats{
		Published:     s.published.Load(),
		Delivered:     s.delivered.Load(),
		CaughtUp:      s.caughtUp.Load(),
		Dropped:       s.dropped.Load(),
		Recovered:     s.recovered.Load(),
		Lost:          s.lost.Load(),
		Reconnects:    s.reconnects.Load(),
		Switchovers:   s.switchovers.Load(),
		LogReads:      s.logReads.Load(),
		HandlerErrors: s.handlerErrors.Load(),
		LogReadAt:     ps.led.readAt(),
	}
}

// encodePayload returns payload's JSON text. A json.RawMessage or []byte is
// taken as JSON text as it is (it must be valid); anything else goes through
// json.Marshal.
func (ps *PubSub) encodePayload(payload any) ([]byte, error) {
	var b []byte
	switch p := payload.(type) {
	case json.RawMessage:
		b = p
	case []byte:
		b = p
	default:
		var err error
		b, err = json.Marshal(payload)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidPayload, err)
		}
	}
	if len(b) > ps.cfg.MaxPayloadBytes {
		return nil, fmt.Errorf("%w: %d bytes, the maximum is %d", ErrPayloadTooLarge, len(b), ps.cfg.MaxPayloadBytes)
	}
	if !json.Valid(b) || !utf8.Valid(b) {
		return nil, fmt.Errorf("%w: not valid UTF-8 JSON", ErrInvalidPayload)
	}
	return b, nil
}

type publishArgs struct {
	channel            string
	payload            []byte
	headers            map[string]string // metadata (see wire.go): the trace context set by telemetry.send
	skipSelf, onlySelf bool
}

func (ps *PubSub) prepare(ctx context.Context, channel string, payload any, opts *PublishOpts) (publishArgs, error) {
	if ps.closed() {
		return publishArgs{}, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return publishArgs{}, err
	}
	if err := validateChannel(channel); err != nil {
		return publishArgs{}, err
	}
	b, err := ps.encodePayload(payload)
	if err != nil {
		return publishArgs{}, err
	}
	a := publishArgs{channel: channel, payload: b, skipSelf: true}
	if opts != nil {
		a.onlySelf = opts.OnlySelf
		a.skipSelf = !opts.IncludeSelf && !opts.OnlySelf
	}
	return a, nil
}

// Publish writes a message to the log and notifies the app's instances, in
// one autocommit statement, which commits without waiting for its WAL flush
// (synchronous_commit off for that transaction only): a server crash may
// lose the last acknowledged Publish calls (at most about 3 ×
// wal_writer_delay), delivered ones too. [PubSub.PublishTx] has the
// durability of the caller's transaction. By default every other instance of the app
// receives it and the publisher does not; see [PublishOpts]. Concurrent
// Publish calls of one instance are grouped into one statement (one commit,
// one NOTIFY), which is what keeps NOTIFY's commit serialisation cheap.
//
// payload is any value json.Marshal accepts; a [json.RawMessage] or []byte
// must already be valid JSON text and is sent byte for byte. Errors:
// ErrClosed, ErrInvalidChannel, ErrInvalidPayload, ErrPayloadTooLarge (in all
// of which nothing was written), ctx's error, or the database's. As with any
// statement, a Publish whose ctx ends while it runs may still have been
// committed (and delivered).
func (ps *PubSub) Publish(ctx context.Context, channel string, payload any, opts *PublishOpts) error {
	a, err := ps.prepare(ctx, channel, payload, opts)
	if err != nil {
		return err
	}
	ctx, span := ps.tel.send(ctx, &a)
	defer span.End()
	req := &pubReq{ctx: ctx, args: a, done: make(chan error, 1)}
	ps.submitPublish(req)
	select {
	case err := <-req.done:
		if err != nil {
			return fmt.Errorf("listen: publish %q: %w", channel, err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// PublishTx writes a message in the caller's transaction. It is delivered
// if and only if tx commits, and only after the commit: the row and its
// notification are part of tx, and PostgreSQL delivers notifications only
// on commit. A rollback leaves no trace. Publishing several messages in one
// transaction sends one notification; listeners read the messages from the
// log, in publication order.
//
// When tx is a [*txhooks.Tx], the publisher's own delivery (IncludeSelf,
// OnlySelf) runs from its after-commit hook; with any other pgx.Tx it
// arrives through this instance's listener like everyone else's.
func (ps *PubSub) PublishTx(ctx context.Context, tx pgx.Tx, channel string, payload any, opts *PublishOpts) error {
	if tx == nil {
		return errors.New("listen: publish: nil tx")
	}
	a, err := ps.prepare(ctx, channel, payload, opts)
	if err != nil {
		return err
	}
	ctx, span := ps.tel.send(ctx, &a)
	defer span.End()
	var env envelope
	err = tx.QueryRow(ctx, ps.sql.publishTx,
		ps.cfg.AppName, a.channel, ps.cfg.InstanceID, a.skipSelf, a.onlySelf, string(a.payload), ps.physChannel,
		encodeHeaders(a.headers),
	).Scan(&env.msg.ID, &env.xid, &env.msg.PublishedAt, nil)
	if err != nil {
		return fmt.Errorf("listen: publish %q: %w", channel, err)
	}
	ps.count(&ps.stats.published, 1)
	if ht, ok := tx.(*txhooks.Tx); ok && !a.skipSelf {
		env.msg.Channel, env.msg.Payload, env.msg.Sender, env.msg.Headers = a.channel, a.payload, ps.cfg.InstanceID, a.headers
		env.skipSelf, env.onlySelf = a.skipSelf, a.onlySelf
		ht.AfterCommit(func(context.Context) error {
			ps.dispatchLocal(env)
			return nil
		})
	}
	return nil
}

// dispatchLocal delivers a committed message of this instance without
// waiting for the listener. Before Start it does nothing (a message
// committed before Start is never delivered), after Close neither.
func (ps *PubSub) dispatchLocal(env envelope) {
	ps.mu.RLock()
	started := ps.state == stateStarted
	ps.mu.RUnlock()
	if started {
		ps.dispatch([]envelope{env}, false)
	}
}

// forMe reports whether env is addressed to this instance.
func (ps *PubSub) forMe(env *envelope) bool {
	self := env.msg.Sender == ps.cfg.InstanceID
	if env.onlySelf {
		return self
	}
	return !(env.skipSelf && self)
}

// dispatch hands each message not dispatched before to the subscriptions of
// its channel. It never blocks on a handler. The ledger claims the messages
// under its lock while they are enqueued, so concurrent dispatchers (the
// listener, local after-commit delivery) keep each subscription's order.
func (ps *PubSub) dispatch(envs []envelope, caughtUp bool) {
	ps.led.claimEach(envs, func(env *envelope) {
		if caughtUp {
			ps.count(&ps.stats.caughtUp, 1)
		}
		if !ps.forMe(env) {
			return
		}
		ps.mu.RLock()
		for s := range ps.subs[env.msg.Channel] {
			s.enqueue(env.msg)
		}
		ps.mu.RUnlock()
	})
}

// claimUnwanted records messages on channels this instance has no
// subscription to as dispatched, without reading them, and returns the
// others that were not dispatched yet. A subscription made later is not
// owed them: they were committed before it.
func (ps *PubSub) claimUnwanted(rows []logRow) []int64 {
	return ps.led.claimUnwanted(rows, func(channel string) bool {
		ps.mu.RLock()
		defer ps.mu.RUnlock()
		return len(ps.subs[channel]) == 0
	})
}

// resyncAll tells every subscription that messages may arrive late.
func (ps *PubSub) resyncAll() {
	ps.mu.RLock()
	defer ps.mu.RUnlock()
	for _, set := range ps.subs {
		for s := range set {
			s.enqueueResync()
		}
	}
}

// Epoch returns a number that changes whenever this instance may have
// missed deliveries: it increases at every reconnection of the listener
// (including one that found another server, see [Stats].Switchovers), before
// the listener is [PubSub.Healthy] again. A consumer that keeps state derived
// from messages (a near cache) compares the epoch it built that state under
// with the current one and rebuilds when they differ; [SubscribeOpts.OnResync]
// is the same signal delivered in order with the messages. It equals
// [Stats].Reconnects.
func (ps *PubSub) Epoch() int64 { return ps.stats.reconnects.Load() }
