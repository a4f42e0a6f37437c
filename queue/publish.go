package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// maxMaxRetries keeps max_attempts (a smallint) in range.
const maxMaxRetries = 10_000

// PublishOpts are per-message options. A nil *PublishOpts means defaults.
type PublishOpts struct {
	// Timeout is each attempt's processing timeout. Defaults to
	// Config.DefaultTimeout.
	Timeout time.Duration
	// MaxRetries is how many failed attempts are retried: 3 means at most 4
	// calls of Process. Defaults to 0 (NocoBase): a failure discards the
	// message (kept, with its error, as a dead letter). Unlike River's
	// MaxAttempts (default 25) it counts failures only: attempts lost to a
	// dead worker are retried on top of it (Config.MaxRescues), which is
	// why river_job.max_attempts shows MaxRetries + 1 + MaxRescues (4 for
	// the defaults) while one failure already discards the message.
	MaxRetries int
	// Delay postpones the message's first availability, counted on the
	// database's clock from the publication (no instance clock takes part).
	Delay time.Duration
	// UniqueKey, when set, makes Publish a no-op while a message of the same
	// channel with the same key is queued or running: it returns that
	// message's id instead. A completed, discarded or cancelled message does
	// not block a new one.
	UniqueKey string
	// Shared publishes to the app-independent queue of a Shared consumer. A
	// channel this instance subscribed uses its subscription's Shared instead.
	Shared bool
}

// Publication is one message of [EventQueue.PublishMany].
type Publication struct {
	Channel string
	Payload any
	Opts    *PublishOpts
}

// Publish stores a message for channel and returns its id. It is durable
// once Publish returns: it survives the stop or crash of every instance and
// is processed by one subscribed instance at a time (another attempt only
// after a failure, a timeout, or its worker's death). payload is encoded
// with encoding/json (a [json.RawMessage] must be valid JSON) and stored as
// a JSON value in river_job.args (see [Message.Payload] for what comes back). Bad input (empty
// channel, invalid options, an unencodable or too large payload) returns an
// error and stores nothing. Publishing works before Start and on instances
// that do not consume channel.
func (q *EventQueue) Publish(ctx context.Context, channel string, payload any, opts *PublishOpts) (int64, error) {
	p, err := q.insertParams(channel, payload, opts)
	if err != nil {
		return 0, err
	}
	if err := q.schedule(ctx, q.pool, []river.InsertManyParams{p}); err != nil {
		return 0, fmt.Errorf("queue: publish %q: %w", channel, err)
	}
	res, err := q.client.Insert(ctx, p.Args, p.InsertOpts)
	if err != nil {
		return 0, fmt.Errorf("queue: publish %q: %w", channel, err)
	}
	q.otel.publishedTo(ctx, channel, 1)
	return res.Job.ID, nil
}

// PublishTx is Publish inside tx (a pgx.Tx or *txhooks.Tx). The message is
// invisible to consumers until tx commits and gone if it rolls back. The
// wake-up NOTIFY is sent in tx too, so PostgreSQL delivers it only after
// commit; no after-commit hook is needed.
func (q *EventQueue) PublishTx(ctx context.Context, tx pgx.Tx, channel string, payload any, opts *PublishOpts) (int64, error) {
	p, err := q.insertParams(channel, payload, opts)
	if err != nil {
		return 0, err
	}
	if err := q.schedule(ctx, tx, []river.InsertManyParams{p}); err != nil {
		return 0, fmt.Errorf("queue: publish %q: %w", channel, err)
	}
	res, err := q.client.InsertTx(ctx, tx, p.Args, p.InsertOpts)
	if err != nil {
		return 0, fmt.Errorf("queue: publish %q: %w", channel, err)
	}
	q.otel.publishedTo(ctx, channel, 1)
	return res.Job.ID, nil
}

// PublishMany stores msgs in one statement and returns their ids in order.
// Either every message is stored or, on any error, none.
func (q *EventQueue) PublishMany(ctx context.Context, msgs []Publication) ([]int64, error) {
	params, err := q.insertManyParams(msgs)
	if err != nil || len(params) == 0 {
		return nil, err
	}
	if err := q.schedule(ctx, q.pool, params); err != nil {
		return nil, fmt.Errorf("queue: publish many: %w", err)
	}
	res, err := q.client.InsertMany(ctx, params)
	if err != nil {
		return nil, fmt.Errorf("queue: publish many: %w", err)
	}
	for _, m := range msgs {
		q.otel.publishedTo(ctx, m.Channel, 1)
	}
	return ids(res), nil
}

// PublishManyTx is PublishMany inside tx, with PublishTx's commit and
// rollback semantics.
func (q *EventQueue) PublishManyTx(ctx context.Context, tx pgx.Tx, msgs []Publication) ([]int64, error) {
	params, err := q.insertManyParams(msgs)
	if err != nil || len(params) == 0 {
		return nil, err
	}
	if err := q.schedule(ctx, tx, params); err != nil {
		return nil, fmt.Errorf("queue: publish many: %w", err)
	}
	res, err := q.client.InsertManyTx(ctx, tx, params)
	if err != nil {
		return nil, fmt.Errorf("queue: publish many: %w", err)
	}
	for _, m := range msgs {
		q.otel.publishedTo(ctx, m.Channel, 1)
	}
	return ids(res), nil
}

// Cancel cancels message id from any instance: a queued message will never
// run; a running one has its Process ctx cancelled (River notifies the
// instance running it) and ends cancelled whatever Process returns then.
// A finished message is left as it is. An unknown id returns ErrNotFound.
// The running instance learns of the cancel by NOTIFY at once, or within a
// minute by River's poll if its LISTEN connection was down.
func (q *EventQueue) Cancel(ctx context.Context, id int64) error {
	if err := q.checkOpen(); err != nil {
		return err
	}
	if _, err := q.client.JobCancel(ctx, id); err != nil {
		if errors.Is(err, river.ErrNotFound) {
			return fmt.Errorf("%w: %d", ErrNotFound, id)
		}
		return fmt.Errorf("queue: cancel %d: %w", id, err)
	}
	return nil
}

func ids(res []*rivertype.JobInsertResult) []int64 {
	out := make([]int64, len(res))
	for i, r := range res {
		out[i] = r.Job.ID
	}
	return out
}

func (q *EventQueue) insertManyParams(msgs []Publication) ([]river.InsertManyParams, error) {
	params := make([]river.InsertManyParams, len(msgs))
	for i, m := range msgs {
		p, err := q.insertParams(m.Channel, m.Payload, m.Opts)
		if err != nil {
			return nil, fmt.Errorf("message %d: %w", i, err)
		}
		params[i] = p
	}
	return params, nil
}

// uniqueStates are the states in which a UniqueKey blocks a duplicate: the
// message is still to be processed. River requires the first four.
var uniqueStates = []rivertype.JobState{
	rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning,
	rivertype.JobStateScheduled, rivertype.JobStateRetryable,
}

func (q *EventQueue) insertParams(channel string, payload any, opts *PublishOpts) (river.InsertManyParams, error) {
	if err := q.checkOpen(); err != nil {
		return river.InsertManyParams{}, err
	}
	if err := validateChannel(channel); err != nil {
		return river.InsertManyParams{}, err
	}
	var o PublishOpts
	if opts != nil {
		o = *opts
	}
	switch {
	case o.Timeout < 0:
		return river.InsertManyParams{}, invalidf("PublishOpts.Timeout %s is negative", o.Timeout)
	case o.MaxRetries < 0 || o.MaxRetries > maxMaxRetries:
		return river.InsertManyParams{}, invalidf("PublishOpts.MaxRetries %d is outside 0..%d", o.MaxRetries, maxMaxRetries)
	case o.Delay < 0:
		return river.InsertManyParams{}, invalidf("PublishOpts.Delay %s is negative", o.Delay)
	}
	raw, err := q.encode(payload)
	if err != nil {
		return river.InsertManyParams{}, fmt.Errorf("publish %q: %w", channel, err)
	}
	shared := o.Shared
	if sub := q.subscribed(channel); sub != nil {
		shared = sub.consumer.Shared
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = q.cfg.DefaultTimeout
	}
	args := messageArgs{
		Channel:    channel,
		TimeoutMS:  timeoutMS(timeout),
		MaxRetries: o.MaxRetries,
		UniqueKey:  o.UniqueKey,
	}
	if hasNULEscape(raw) {
		args.PayloadText = string(raw)
	} else {
		args.Payload = raw
	}
	io := &river.InsertOpts{
		Queue:       queueName(q.cfg.AppName, channel, shared),
		MaxAttempts: o.MaxRetries + 1 + q.cfg.MaxRescues,
	}
	if o.Delay > 0 {
		// A distance for now; schedule makes it a database time.
		io.ScheduledAt = time.Time{}.Add(o.Delay)
	}
	if o.UniqueKey != "" {
		io.UniqueOpts = river.UniqueOpts{ByArgs: true, ByQueue: true, ByState: uniqueStates}
	}
	return river.InsertManyParams{Args: args, InsertOpts: io}, nil
}

func (q *EventQueue) encode(payload any) (json.RawMessage, error) {
	var raw []byte
	if r, ok := payload.(json.RawMessage); ok {
		if !json.Valid(r) {
			return nil, fmt.Errorf("%w: json.RawMessage is not valid JSON", ErrInvalidPayload)
		}
		raw = r
	} else {
		b, err := json.Marshal(payload)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidPayload, err)
		}
		raw = b
	}
	if len(raw) > q.cfg.MaxPayloadBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrPayloadTooLarge, len(raw), q.cfg.MaxPayloadBytes)
	}
	if !utf8.Valid(raw) {
		return nil, fmt.Errorf("%w: not valid UTF-8", ErrInvalidPayload)
	}
	return raw, nil
}

// hasNULEscape reports whether the JSON text raw holds a \u0000 escape,
// which jsonb (river_job.args) cannot store.
func hasNULEscape(raw []byte) bool {
	for i := 0; ; {
		j := bytes.Index(raw[i:], []byte(`u0000`))
		if j < 0 {
			return false
		}
		j += i
		// An escape if an odd number of backslashes precede the u.
		n := 0
		for k := j - 1; k >= 0 && raw[k] == '\\'; k-- {
			n++
		}
		if n%2 == 1 {
			return true
		}
		i = j + 1
	}
}

// subscribed returns this instance's subscription of channel, if any.
func (q *EventQueue) subscribed(channel string) *subscription {
	q.subsMu.RLock()
	defer q.subsMu.RUnlock()
	return q.byChannel[channel]
}

// schedule turns the Delay of delayed messages (stored by insertParams as
// a time after the zero time) into a time on the database's clock: one
// query, only when a message is delayed. db is the pool, or the
// transaction the messages are published in.
func (q *EventQueue) schedule(ctx context.Context, db interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}, params []river.InsertManyParams) error {
	var now time.Time
	for _, p := range params {
		if p.InsertOpts.ScheduledAt.IsZero() {
			continue
		}
		if now.IsZero() {
			if err := db.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&now); err != nil {
				return fmt.Errorf("read database clock: %w", err)
			}
		}
		p.InsertOpts.ScheduledAt = now.Add(p.InsertOpts.ScheduledAt.Sub(time.Time{}))
	}
	return nil
}
