// Package otelx is pgcoord's one place for OpenTelemetry: it resolves a
// Config's MeterProvider and TracerProvider (nil → the global ones), names
// meters, tracers and instruments by one scheme, and holds the attribute keys
// every package shares. It depends on the OpenTelemetry API only, never on an
// SDK.
//
// Naming: a component's meter and tracer are named
// "github.com/pgcoord/pgcoord/<component>"; its instruments are
// "pgcoord.<component>.<what>" (for example pgcoord.cache.hits); durations
// are float64 histograms in seconds. Where the OpenTelemetry messaging
// semantic conventions fit (pub/sub, sync messages, the queue), measurements
// carry messaging.system="pgcoord", messaging.destination.name (the logical
// channel) and messaging.operation.type.
package otelx

import (
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// ScopePrefix prefixes every meter's and tracer's instrumentation scope name.
const ScopePrefix = "github.com/pgcoord/pgcoord/"

// System is messaging.system's value on every pgcoord measurement and span
// that follows the messaging conventions.
const System = "pgcoord"

// Shared attribute keys.
const (
	KeySystem        = attribute.Key("messaging.system")
	KeyDestination   = attribute.Key("messaging.destination.name")
	KeyOperationType = attribute.Key("messaging.operation.type")
	KeyOperationName = attribute.Key("messaging.operation.name")
	KeyMessageID     = attribute.Key("messaging.message.id")
	KeyApp           = attribute.Key("pgcoord.app")
)

// Messaging operation types (messaging.operation.type).
const (
	OpCreate  = "create"
	OpSend    = "send"
	OpReceive = "receive"
	OpProcess = "process"
)

// SystemAttr is messaging.system="pgcoord".
var SystemAttr = KeySystem.String(System)

// DurationBuckets are the explicit histogram boundaries (seconds) of every
// pgcoord duration: 100 µs to 60 s.
var DurationBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
}

// Meter creates one component's instruments.
type Meter struct {
	m         metric.Meter
	component string
}

// NewMeter returns the Meter of component ("cache", "listen", "queue",
// "lock") from mp, or from otel.GetMeterProvider() when mp is nil.
func NewMeter(mp metric.MeterProvider, component string) Meter {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	return Meter{m: mp.Meter(ScopePrefix + component), component: component}
}

// Tracer returns component's tracer from tp, or from
// otel.GetTracerProvider() when tp is nil.
func Tracer(tp trace.TracerProvider, component string) trace.Tracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(ScopePrefix + component)
}

// Name is the instrument name "pgcoord.<component>.<what>".
func (m Meter) Name(what string) string { return "pgcoord." + m.component + "." + what }

// Meter is the underlying OpenTelemetry meter (for RegisterCallback).
func (m Meter) Meter() metric.Meter { return m.m }

// Counter is the monotonic counter pgcoord.<component>.<what>. Instrument
// names are constants, so an error is a programming error: it goes to
// otel.Handle and the (no-op) instrument is still returned.
func (m Meter) Counter(what, unit, desc string) metric.Int64Counter {
	c, err := m.m.Int64Counter(m.Name(what), metric.WithUnit(unit), metric.WithDescription(desc))
	handle(err)
	return c
}

// Duration is the histogram pgcoord.<component>.<what> in seconds with
// [DurationBuckets].
func (m Meter) Duration(what, desc string) metric.Float64Histogram {
	h, err := m.m.Float64Histogram(m.Name(what), metric.WithUnit("s"), metric.WithDescription(desc),
		metric.WithExplicitBucketBoundaries(DurationBuckets...))
	handle(err)
	return h
}

// ObservableCounter is the asynchronous monotonic counter
// pgcoord.<component>.<what>, observed by a callback registered with
// RegisterCallback.
func (m Meter) ObservableCounter(what, unit, desc string) metric.Int64ObservableCounter {
	c, err := m.m.Int64ObservableCounter(m.Name(what), metric.WithUnit(unit), metric.WithDescription(desc))
	handle(err)
	return c
}

// ObservableGauge is the asynchronous gauge pgcoord.<component>.<what>.
func (m Meter) ObservableGauge(what, unit, desc string) metric.Int64ObservableGauge {
	g, err := m.m.Int64ObservableGauge(m.Name(what), metric.WithUnit(unit), metric.WithDescription(desc))
	handle(err)
	return g
}

// RegisterCallback registers f for the observable instruments; the returned
// Registration is unregistered by the caller's Stop. A registration error
// goes to otel.Handle and yields a Registration whose Unregister does nothing.
func (m Meter) RegisterCallback(f metric.Callback, instruments ...metric.Observable) metric.Registration {
	r, err := m.m.RegisterCallback(f, instruments...)
	if err != nil {
		handle(err)
		return noRegistration{}
	}
	return r
}

type noRegistration struct{ metric.Registration }

func (noRegistration) Unregister() error { return nil }

// Attrs is a precomputed attribute set as a measurement option: build it once
// (per cache, per channel) and pass it on every measurement, so the hot path
// allocates nothing.
func Attrs(kv ...attribute.KeyValue) metric.MeasurementOption {
	return metric.WithAttributeSet(attribute.NewSet(kv...))
}

// Seconds is d in seconds, the unit of every pgcoord duration.
func Seconds(d time.Duration) float64 { return d.Seconds() }

func handle(err error) {
	if err != nil {
		otel.Handle(err)
	}
}

// Off is the internal switch that turns a component's instrumentation off
// entirely: given as a Config's MeterProvider (and TracerProvider, see
// [OffTracer]), the component skips even the calls a no-op provider would
// answer (tracer.Start, Enabled, the propagator). It exists for `pgcoord
// bench`'s otel.* rows, which measure what instrumentation costs with a
// no-op provider against the path without it. It is not a public knob:
// only pgcoord's own packages can name it (the package is internal);
// applications get the no-op provider's cost, which those rows show.
var Off metric.MeterProvider = offMeter{}

// OffTracer is [Off]'s TracerProvider.
var OffTracer trace.TracerProvider = offTracer{}

type offMeter struct{ metricnoop.MeterProvider }

type offTracer struct{ tracenoop.TracerProvider }

// IsOff reports whether mp is [Off]: the component built with it records
// and traces nothing, without calling into OpenTelemetry on its hot paths.
func IsOff(mp metric.MeterProvider) bool {
	_, ok := mp.(offMeter)
	return ok
}

// NoSpan is the span a switched-off component uses where it would start
// one: ending it does nothing.
var NoSpan trace.Span = tracenoop.Span{}
