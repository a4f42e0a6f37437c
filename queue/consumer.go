package queue

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
)

// Consumer consumes one channel on this instance.
type Consumer struct {
	// Process handles one message. Its ctx is cancelled at the message's
	// timeout, when the message is cancelled ([EventQueue.Cancel], from any
	// instance), when a graceful Stop runs out of time, and when this
	// instance's liveness session stays lost ([ErrLivenessLost]: the message
	// may soon run elsewhere). Returning an error
	// or panicking is a failed attempt; returning nil completes the message,
	// except a message cancelled while it ran: that ends cancelled whatever
	// Process returns.
	// Required.
	Process func(ctx context.Context, msg Message) error
	// Idle reports whether this instance may start messages of the channel
	// now. It is called right before each claim, on River's fetch goroutine,
	// so it must be fast. While it returns false this instance claims
	// nothing: other instances keep consuming, and no message is charged an
	// attempt. A false→true change is noticed at the next fetch (at most
	// PollInterval later). Nil means always ready.
	Idle func() bool
	// Concurrency is how many messages of the channel this instance runs at
	// once (River's QueueConfig.MaxWorkers), at most [MaxConcurrency].
	// Defaults to [DefaultConcurrency] (1, NocoBase's default); say
	// MaxConcurrency for River's maximum.
	Concurrency int
	// Shared maps the channel to the same queue for every app (the app name is
	// left out, as in NocoBase). Publishers of the channel must say Shared
	// too (PublishOpts.Shared), unless they subscribed it.
	Shared bool
	// PollInterval is the longest this instance goes without looking for
	// messages of the channel when no NOTIFY woke it. Defaults to
	// [DefaultPollInterval].
	PollInterval time.Duration
}

// Message is one message as a consumer sees it.
type Message struct {
	// ID is the message's id (River's job id), as returned by Publish.
	ID int64
	// Channel is the channel it was published to.
	Channel string
	// Payload is the published JSON value, compact, as jsonb (River's
	// args) keeps it: the same value, with object keys in jsonb's order and
	// only the last of duplicate keys. A payload holding a \u0000 escape,
	// which jsonb cannot store, is kept byte for byte.
	Payload json.RawMessage
	// Retried is how many earlier attempts failed (0 on the first call).
	// Attempts lost to a dead worker are not counted.
	Retried int
	// Options are the options it was published with.
	Options MessageOptions
}

// MessageOptions are a message's publish options, resolved.
type MessageOptions struct {
	// Timeout is the processing timeout of each attempt.
	Timeout time.Duration
	// MaxRetries is how many failed attempts are retried.
	MaxRetries int
	// UniqueKey is the key it was published with, if any.
	UniqueKey string
	// PublishedAt is when it was published (database time).
	PublishedAt time.Time
}

// subscription is one subscribed channel.
type subscription struct {
	channel  string
	queue    string
	consumer Consumer
	// closing is set by Unsubscribe: the channel claims nothing more.
	closing atomic.Bool
}

func (c Consumer) validate() error {
	switch {
	case c.Process == nil:
		return invalidf("Consumer.Process is nil")
	case c.Concurrency < 0 || c.Concurrency > MaxConcurrency:
		return invalidf("Consumer.Concurrency %d is outside 0..%d", c.Concurrency, MaxConcurrency)
	case c.PollInterval != 0 && c.PollInterval < minFetchCooldown:
		return invalidf("Consumer.PollInterval %s is below %s", c.PollInterval, minFetchCooldown)
	}
	return nil
}

// queueConfig derives the River queue settings of a consumer. FetchCooldown
// bounds how often this instance claims messages of the channel: one claim
// takes up to the free worker slots, so Concurrency / FetchCooldown bounds
// throughput. Scaling the cooldown with Concurrency (20 µs per worker, 1 ms
// at least, 20 ms at most) keeps that ceiling near 50,000 messages/s per
// channel per instance while a busy channel with many workers claims in
// bigger, rarer batches. An idle channel costs one cheap query per
// PollInterval; a message published on an idle channel is claimed at once
// (the first fetch after a quiet period is not delayed).
func (q *EventQueue) queueConfig(c Consumer) river.QueueConfig {
	workers := cmp.Or(c.Concurrency, DefaultConcurrency)
	poll := c.PollInterval
	if poll == 0 {
		poll = DefaultPollInterval
	}
	cooldown := q.cfg.FetchCooldown
	if cooldown == 0 {
		cooldown = min(max(time.Duration(workers)*cooldownPerWorker, minFetchCooldown), maxDerivedFetchCooldown)
	}
	cooldown = min(cooldown, poll)
	return river.QueueConfig{MaxWorkers: workers, FetchCooldown: cooldown, FetchPollInterval: poll}
}

// Subscribe makes this instance consume channel with c, at once if the queue
// is started, else from Start. Only instances that subscribe a channel
// consume it; any instance may publish to it. A channel can be subscribed
// once per instance: a second Subscribe returns ErrAlreadySubscribed and
// leaves the first in place. ctx bounds Subscribe only (a cancelled ctx
// subscribes nothing); the subscription lasts until Unsubscribe or Stop.
func (q *EventQueue) Subscribe(ctx context.Context, channel string, c Consumer) error {
	if err := validateChannel(channel); err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("queue: subscribe %q: %w", channel, err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.life.Stopped() {
		return ErrClosed
	}
	if q.subscribed(channel) != nil {
		return fmt.Errorf("%w: %q", ErrAlreadySubscribed, channel)
	}
	sub := &subscription{channel: channel, queue: queueName(q.cfg.AppName, channel, c.Shared), consumer: c}
	// Indexed before River may fetch for it: the Idle gate and the worker
	// look it up.
	q.index(sub, true)
	if err := q.client.Queues().Add(sub.queue, q.queueConfig(c)); err != nil {
		q.index(sub, false)
		return fmt.Errorf("queue: subscribe %q: %w", channel, err)
	}
	return nil
}

// Unsubscribe stops consuming channel on this instance: it claims nothing
// more, and Unsubscribe returns once the channel's running messages have
// finished. Queued messages stay queued for other (or later) consumers. If
// ctx ends first it returns ctx's error and the channel stays half-removed
// (claiming nothing); call Unsubscribe again to finish. A Process must not
// Subscribe or Unsubscribe (Unsubscribe waits for running messages while
// holding River's queue lock, which Subscribe needs).
func (q *EventQueue) Unsubscribe(ctx context.Context, channel string) error {
	q.mu.Lock()
	if q.life.Stopped() {
		q.mu.Unlock()
		return ErrClosed
	}
	sub := q.subscribed(channel)
	if sub == nil {
		q.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrNotSubscribed, channel)
	}
	sub.closing.Store(true)
	q.mu.Unlock()

	// River's Remove waits for the channel's running messages (q.mu is not
	// held, so they may use the queue); the worker still finds sub in byQueue
	// meanwhile. A concurrent Unsubscribe that removed it first is success.
	var notFound *river.QueueNotFoundError
	if err := q.client.Queues().Remove(ctx, sub.queue); err != nil && !errors.As(err, &notFound) {
		return fmt.Errorf("queue: unsubscribe %q: %w", channel, err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.subscribed(channel) == sub {
		q.index(sub, false)
	}
	return nil
}

// index adds or removes sub in both indexes. Callers hold q.mu.
func (q *EventQueue) index(sub *subscription, add bool) {
	q.subsMu.Lock()
	defer q.subsMu.Unlock()
	if add {
		q.byChannel[sub.channel] = sub
		q.byQueue[sub.queue] = sub
	} else {
		delete(q.byChannel, sub.channel)
		delete(q.byQueue, sub.queue)
	}
}

func (q *EventQueue) lookup(queue string) *subscription {
	q.subsMu.RLock()
	defer q.subsMu.RUnlock()
	return q.byQueue[queue]
}

// mayClaim is the Idle gate, asked right before River claims messages of
// queue for this instance.
func (q *EventQueue) mayClaim(ctx context.Context, queue string) (ok bool) {
	sub := q.lookup(queue)
	if sub == nil || sub.closing.Load() {
		return false
	}
	if sub.consumer.Idle == nil {
		return true
	}
	defer func() {
		if r := recover(); r != nil {
			q.logger.ErrorContext(ctx, "queue: Idle panicked; claiming nothing", slog.String("channel", sub.channel), slog.Any("panic", r))
			ok = false
		}
	}()
	return sub.consumer.Idle()
}

// gatedDriver is River's pgx driver whose executors ask [EventQueue.mayClaim]
// before claiming messages. River's producer claims through
// Executor.JobGetAvailable (one UPDATE … FOR UPDATE SKIP LOCKED that moves
// rows to running and charges an attempt); answering "nothing available"
// there is the only way to keep an instance from claiming without charging
// attempts or hiding messages from other instances. Everything else is
// River's own code.
type gatedDriver struct {
	*riverpgxv5.Driver
	q *EventQueue
}

func (d *gatedDriver) GetExecutor() riverdriver.Executor {
	return &gatedExecutor{Executor: d.Driver.GetExecutor(), q: d.q}
}

type gatedExecutor struct {
	riverdriver.Executor
	q *EventQueue
}

// JobGetAvailable claims only while this instance's liveness session is
// up (a message claimed by an instance that others see dead would be
// handed back at once) and the channel's Idle allows; it records each
// claim's attempt and liveness epoch.
func (e *gatedExecutor) JobGetAvailable(ctx context.Context, params *riverdriver.JobGetAvailableParams) (*riverdriver.JobGetAvailableResult, error) {
	epoch, live, _ := e.q.live.State()
	if !live || !e.q.mayClaim(ctx, params.Queue) {
		return &riverdriver.JobGetAvailableResult{}, nil
	}
	res, err := e.Executor.JobGetAvailable(ctx, params)
	if err == nil && res != nil {
		e.q.recordClaims(res.Jobs, epoch)
	}
	return res, err
}

// JobSetStateIfRunningMany writes attempts' outcomes through
// [EventQueue.setOutcomes].
func (e *gatedExecutor) JobSetStateIfRunningMany(ctx context.Context, params *riverdriver.JobSetStateIfRunningManyParams) ([]*rivertype.JobRow, error) {
	return e.q.setOutcomes(ctx, e.Executor, params)
}

// JobGetStuck finds nothing: River's rescuer, which compares its leader's
// clock with attempted_at, never fires. Rescue is by liveness
// ([EventQueue.runRescuer]).
func (e *gatedExecutor) JobGetStuck(context.Context, *riverdriver.JobGetStuckParams) ([]*rivertype.JobRow, error) {
	return nil, nil
}

// Begin wraps River's transactions so its scheduler's time is moved to the
// database clock too.
func (e *gatedExecutor) Begin(ctx context.Context) (riverdriver.ExecutorTx, error) {
	tx, err := e.Executor.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return &gatedTx{ExecutorTx: tx, q: e.q}, nil
}

type gatedTx struct {
	riverdriver.ExecutorTx
	q *EventQueue
}

// JobSchedule makes due the scheduled and retryable messages whose time has
// come by the database's clock: River passes its leader's clock plus a look
// ahead, which is kept as a distance from the database's now.
func (t *gatedTx) JobSchedule(ctx context.Context, params *riverdriver.JobScheduleParams) ([]*riverdriver.JobScheduleResult, error) {
	if params.Now != nil {
		offset, err := t.q.clockOffset(ctx)
		if err != nil {
			return nil, err
		}
		p := *params
		now := params.Now.Add(offset)
		p.Now = &now
		params = &p
	}
	return t.ExecutorTx.JobSchedule(ctx, params)
}
