package listen

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgcoord/pgcoord/internal/otelx"
)

// telemetry holds a PubSub's instruments, created once in New. The counters
// are observable over Stats (the listener's hot path pays nothing for them);
// the handler duration and the publish→deliver lag are recorded per handler
// call, only when enabled (an SDK is installed).
type telemetry struct {
	handler, lag metric.Float64Histogram
	counters     []metric.Int64ObservableCounter
	healthy      metric.Int64ObservableGauge
	reg          metric.Registration
	system       metric.ObserveOption
	tracer       trace.Tracer
	off          bool // otelx.Off: no OpenTelemetry call on the hot paths
}

// propagator carries W3C trace context in message headers.
var propagator = propagation.TraceContext{}

// send starts the producer span of a publish of a and, when the span's
// context is valid, puts it in a's headers.
func (t *telemetry) send(ctx context.Context, a *publishArgs) (context.Context, trace.Span) {
	if t.off {
		return ctx, otelx.NoSpan
	}
	ctx, span := t.tracer.Start(ctx, "send "+a.channel, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(otelx.SystemAttr, otelx.KeyDestination.String(a.channel), otelx.KeyOperationType.String(otelx.OpSend)))
	if span.SpanContext().IsValid() {
		h := propagation.MapCarrier{}
		propagator.Inject(ctx, h)
		a.headers = h
	}
	return ctx, span
}

// process starts the consumer span of a handler call of s on msg, a child of
// the publisher's span when msg carries its trace context.
func (t *telemetry) process(ctx context.Context, s *Subscription, msg Message) (context.Context, trace.Span) {
	if t.off {
		return ctx, otelx.NoSpan
	}
	if len(msg.Headers) > 0 {
		ctx = propagator.Extract(ctx, propagation.MapCarrier(msg.Headers))
	}
	return t.tracer.Start(ctx, s.span.name, s.span.opts...)
}

// spanStart is a subscription's consumer span name and start options, built
// once.
type spanStart struct {
	name string
	opts []trace.SpanStartOption
}

func newSpanStart(channel string) spanStart {
	return spanStart{name: "process " + channel, opts: []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(otelx.SystemAttr, otelx.KeyDestination.String(channel), otelx.KeyOperationType.String(otelx.OpProcess)),
	}}
}

// failed marks span as an error when err is not nil.
func failed(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "handler failed")
	}
}

// statsCounters names the observable counters and reads each from Stats,
// in one order.
var statsCounters = []struct {
	what, unit, desc string
	read             func(Stats) int64
}{
	{"published", "{message}", "Messages written by Publish and PublishTx (a rolled-back PublishTx included).", func(s Stats) int64 { return s.Published }},
	{"delivered", "{message}", "Handler calls (a debounced burst counts once).", func(s Stats) int64 { return s.Delivered }},
	{"handler.errors", "{call}", "Handler calls that returned an error or panicked.", func(s Stats) int64 { return s.HandlerErrors }},
	{"catchup.reads", "{read}", "Statements that read the message log (catch-up after a wake-up, a poll or a reconnect).", func(s Stats) int64 { return s.LogReads }},
	{"catchup.rows", "{message}", "Messages found in the log instead of through a notification (recovered by catch-up).", func(s Stats) int64 { return s.CaughtUp }},
	{"dropped", "{message}", "Messages that did not fit a subscription's buffer.", func(s Stats) int64 { return s.Dropped }},
	{"recovered", "{message}", "Dropped messages read back from the log and delivered.", func(s Stats) int64 { return s.Recovered }},
	{"lost", "{message}", "Dropped messages no longer in the log when recovered (pruned after Retention).", func(s Stats) int64 { return s.Lost }},
	{"reconnects", "{reconnect}", "Successful reconnections of the listener.", func(s Stats) int64 { return s.Reconnects }},
	{"switchovers", "{switchover}", "Times the listener found itself on another server than its watermark's.", func(s Stats) int64 { return s.Switchovers }},
}

func newTelemetry(ps *PubSub, mp metric.MeterProvider, tp trace.TracerProvider) *telemetry {
	m := otelx.NewMeter(mp, "listen")
	t := &telemetry{
		handler: m.Duration("handler.duration", "Duration of one handler call (messaging.destination.name: the channel)."),
		lag:     m.Duration("delivery.lag", "From the publishing transaction's database time to the handler call on this instance (includes clock skew between the database and this host)."),
		healthy: m.ObservableGauge("healthy", "1", "1 while the listener connection is up and caught up (PubSub.Healthy), else 0."),
		system:  otelx.Attrs(otelx.SystemAttr),
		tracer:  otelx.Tracer(tp, "listen"),
		off:     otelx.IsOff(mp),
	}
	observables := []metric.Observable{t.healthy}
	for _, c := range statsCounters {
		t.counters = append(t.counters, m.ObservableCounter(c.what, c.unit, c.desc))
		observables = append(observables, t.counters[len(t.counters)-1])
	}
	t.reg = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := ps.Stats()
		for i, c := range statsCounters {
			o.ObserveInt64(t.counters[i], c.read(s), t.system)
		}
		var h int64
		if ps.Healthy() {
			h = 1
		}
		o.ObserveInt64(t.healthy, h, t.system)
		return nil
	}, observables...)
	return t
}

// channelAttrs is the measurement option of a subscription's channel.
func channelAttrs(channel string) metric.MeasurementOption {
	return otelx.Attrs(otelx.SystemAttr, otelx.KeyDestination.String(channel), otelx.KeyOperationType.String(otelx.OpProcess))
}

// called records a handler call of s on msg that began at begin (the zero
// time when the handler histogram is disabled).
func (t *telemetry) called(s *Subscription, msg Message, begin time.Time) {
	if begin.IsZero() {
		return
	}
	ctx := context.Background()
	t.handler.Record(ctx, time.Since(begin).Seconds(), s.attrs)
	if !msg.PublishedAt.IsZero() {
		t.lag.Record(ctx, max(0, begin.Sub(msg.PublishedAt).Seconds()), s.attrs)
	}
}

// begin is the start of a handler call to time: the zero time when the
// handler histogram is disabled (no SDK), so the clock is not read.
func (t *telemetry) begin() time.Time {
	if !t.off && t.handler.Enabled(context.Background()) {
		return time.Now()
	}
	return time.Time{}
}
