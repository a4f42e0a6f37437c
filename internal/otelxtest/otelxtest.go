// Package otelxtest gives tests an OpenTelemetry SDK MeterProvider with an
// in-memory reader and a TracerProvider with an in-memory exporter, and reads
// what they recorded. Only tests import it: pgcoord's library packages depend
// on the OpenTelemetry API alone.
package otelxtest

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// Metrics is a MeterProvider whose measurements a test reads on demand.
type Metrics struct {
	Provider *sdkmetric.MeterProvider
	reader   *sdkmetric.ManualReader
}

// NewMetrics returns a MeterProvider shut down by t.Cleanup.
func NewMetrics(t testing.TB) *Metrics {
	reader := sdkmetric.NewManualReader()
	p := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	return &Metrics{Provider: p, reader: reader}
}

// Collect reads every instrument once (observable callbacks run).
func (m *Metrics) Collect(t testing.TB) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, m.reader.Collect(context.Background(), &rm))
	out := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		for _, md := range sm.Metrics {
			out[md.Name] = md.Data
		}
	}
	return out
}

// Value is the sum of instrument name's data points whose attributes
// include attrs: a counter's or gauge's value, a histogram's count. It is 0
// for an instrument that recorded nothing.
func (m *Metrics) Value(t testing.TB, name string, attrs ...attribute.KeyValue) int64 {
	t.Helper()
	return Value(m.Collect(t)[name], attrs...)
}

// Want is the expected Value of instrument Name over the data points whose
// attributes include Attrs.
type Want struct {
	Name  string
	Attrs []attribute.KeyValue
	Value int64
}

// Require collects once and checks every want; it returns the collection
// for further checks.
func (m *Metrics) Require(t testing.TB, wants ...Want) map[string]metricdata.Aggregation {
	t.Helper()
	got := m.Collect(t)
	for _, w := range wants {
		require.Equal(t, w.Value, Value(got[w.Name], w.Attrs...), "%s %v", w.Name, w.Attrs)
	}
	return got
}

// Value is Metrics.Value over one collected aggregation.
func Value(data metricdata.Aggregation, attrs ...attribute.KeyValue) int64 {
	var total int64
	switch d := data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			if has(p.Attributes, attrs) {
				total += p.Value
			}
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			if has(p.Attributes, attrs) {
				total += p.Value
			}
		}
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			if has(p.Attributes, attrs) {
				total += int64(p.Count)
			}
		}
	}
	return total
}

func has(set attribute.Set, attrs []attribute.KeyValue) bool {
	for _, kv := range attrs {
		v, ok := set.Value(kv.Key)
		if !ok || v != kv.Value {
			return false
		}
	}
	return true
}

// Traces is a TracerProvider whose ended spans a test reads.
type Traces struct {
	Provider *sdktrace.TracerProvider
	Exporter *tracetest.InMemoryExporter
}

// NewTraces returns a TracerProvider that samples every span and exports it
// synchronously when it ends; t.Cleanup shuts it down.
func NewTraces(t testing.TB) *Traces {
	exp := tracetest.NewInMemoryExporter()
	p := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	return &Traces{Provider: p, Exporter: exp}
}

// Spans returns the ended spans named name (all ended spans when name is "").
func (tr *Traces) Spans(name string) tracetest.SpanStubs {
	var out tracetest.SpanStubs
	for _, s := range tr.Exporter.GetSpans() {
		if name == "" || s.Name == name {
			out = append(out, s)
		}
	}
	return out
}
