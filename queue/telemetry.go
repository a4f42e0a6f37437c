package queue

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/pgcoord/pgcoord/internal/otelx"
)

// depthTimeout bounds the one query of a queue-depth collection.
const depthTimeout = 5 * time.Second

// Queue depth states (pgcoord.queue.state), as [ChannelStats] counts them.
var depthStates = [...]string{"queued", "running", "completed", "retried", "discarded", "cancelled"}

// telemetry holds the queue's instruments, created once in New.
type telemetry struct {
	published, started, completed, failed, retried, cancelled, discarded, rescued metric.Int64Counter
	process                                                                       metric.Float64Histogram
	depth                                                                         metric.Int64ObservableGauge
	reg                                                                           metric.Registration

	// channels caches each channel's attribute set (a channelAttrs), so a
	// measurement allocates none.
	channels sync.Map
	// noChannel is the set of measurements without a channel (rescues).
	noChannel metric.MeasurementOption
}

// channelAttrs are a channel's precomputed measurement options.
type channelAttrs struct {
	send, process metric.MeasurementOption
	depth         [len(depthStates)]metric.ObserveOption
}

func newTelemetry(q *EventQueue, mp metric.MeterProvider) *telemetry {
	m := otelx.NewMeter(mp, "queue")
	t := &telemetry{
		published: m.Counter("published", "{message}", "Messages published (Publish, PublishTx, PublishMany*; counted when the insert returned)."),
		started:   m.Counter("started", "{message}", "Attempts started: Process called."),
		completed: m.Counter("completed", "{message}", "Attempts that completed: Process returned nil."),
		failed:    m.Counter("failed", "{message}", "Attempts that failed: Process returned an error, panicked or timed out."),
		retried:   m.Counter("retried", "{message}", "Failed attempts that will be retried."),
		cancelled: m.Counter("cancelled", "{message}", "Running messages cancelled (EventQueue.Cancel)."),
		discarded: m.Counter("discarded", "{message}", "Messages discarded: failed with no retry left (dead letters)."),
		rescued:   m.Counter("rescued", "{message}", "Running messages of dead instances handed back by this instance's rescuer."),
		process:   m.Duration("process.duration", "Duration of one Process call, panics and timeouts included."),
		depth:     m.ObservableGauge("depth", "{message}", "Messages per subscribed channel and state (pgcoord.queue.state), read in one query per collection."),
		noChannel: otelx.Attrs(otelx.SystemAttr),
	}
	t.reg = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		return t.observeDepth(ctx, q, o)
	}, t.depth)
	return t
}

// channel returns channel's precomputed attribute sets.
func (t *telemetry) channel(channel string) *channelAttrs {
	if a, ok := t.channels.Load(channel); ok {
		return a.(*channelAttrs)
	}
	dest := otelx.KeyDestination.String(channel)
	a := &channelAttrs{
		send:    otelx.Attrs(otelx.SystemAttr, dest, otelx.KeyOperationType.String(otelx.OpSend)),
		process: otelx.Attrs(otelx.SystemAttr, dest, otelx.KeyOperationType.String(otelx.OpProcess)),
	}
	for i, s := range depthStates {
		a.depth[i] = metric.WithAttributeSet(attribute.NewSet(otelx.SystemAttr, dest, attribute.String("pgcoord.queue.state", s)))
	}
	got, _ := t.channels.LoadOrStore(channel, a)
	return got.(*channelAttrs)
}

// observeDepth reports every subscribed channel's counts from one Stats
// query. A closed queue or a failed query reports nothing (the error goes to
// the SDK's error handler).
func (t *telemetry) observeDepth(ctx context.Context, q *EventQueue, o metric.Observer) error {
	if q.closed.Load() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, depthTimeout)
	defer cancel()
	stats, err := q.Stats(ctx)
	if err != nil {
		return err
	}
	for ch, s := range stats {
		a := t.channel(ch)
		for i, n := range [...]int64{s.Queued, s.Running, s.Completed, s.Retried, s.Discarded, s.Cancelled} {
			o.ObserveInt64(t.depth, n, a.depth[i])
		}
	}
	return nil
}

// published counts n messages published to channel.
func (t *telemetry) publishedTo(ctx context.Context, channel string, n int) {
	t.published.Add(ctx, int64(n), t.channel(channel).send)
}
