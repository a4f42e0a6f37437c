package pgcache

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgcoord/pgcoord/internal/otelx"
)

// Attribute keys of the cache instruments.
const (
	keyCacheName = attribute.Key("pgcoord.cache.name")
	keyStore     = attribute.Key("pgcoord.cache.store")
	keyLayer     = attribute.Key("pgcoord.cache.layer")
	keyOperation = attribute.Key("pgcoord.cache.operation")
	keyReason    = attribute.Key("pgcoord.cache.reason")
)

// telemetry is a Manager's instruments, created once in NewManager. The
// counters are observable: they read each cache's Stats at collection time,
// so a Get pays nothing for them. Durations are recorded only when the
// instrument is enabled (an SDK is installed), so a no-op provider does not
// even read the clock.
type telemetry struct {
	op, loader metric.Float64Histogram
	tracer     trace.Tracer

	hits, misses, invalidations, flushes, swept metric.Int64ObservableCounter
	reg                                         metric.Registration
	// sweptOther is the attribute set of expired rows of prefixes without a
	// cache on this Manager.
	sweptOther metric.ObserveOption
	off        bool // otelx.Off (pgcoord bench's otel.* rows): opStart reads nothing
}

// cacheAttrs are one cache's precomputed attribute sets.
type cacheAttrs struct {
	get, mget, write, reset, load metric.MeasurementOption

	storeHit, storeMiss, nearHit, nearMiss, cache metric.ObserveOption
	expired, evicted                              metric.ObserveOption
}

func newTelemetry(m *Manager, mp metric.MeterProvider, tp trace.TracerProvider) *telemetry {
	meter := otelx.NewMeter(mp, "cache")
	t := &telemetry{
		op:            meter.Duration("operation.duration", "Duration of a cache operation (pgcoord.cache.operation: get, mget, write, reset), near-cache hits included."),
		loader:        meter.Duration("loader.duration", "Duration of a loader function run by Wrap."),
		tracer:        otelx.Tracer(tp, "cache"),
		hits:          meter.ObservableCounter("hits", "{lookup}", "Reads that found the key, per layer (near: this instance's memory; store: PostgreSQL or the memory store)."),
		misses:        meter.ObservableCounter("misses", "{lookup}", "Reads that did not find the key, per layer (a near miss goes on to the store)."),
		invalidations: meter.ObservableCounter("near.invalidations", "{key}", "Keys dropped from the near cache because of a write on any instance."),
		flushes:       meter.ObservableCounter("near.flushes", "{flush}", "Whole near-cache flushes (Reset anywhere, listener reconnects)."),
		swept:         meter.ObservableCounter("swept", "{entry}", "Entries deleted by the sweeper (pgcoord.cache.reason: expired, max_entries; max_entries includes the memory store's LRU evictions)."),
		sweptOther:    metric.WithAttributeSet(attribute.NewSet(keyReason.String("expired"))),
		off:           otelx.IsOff(mp),
	}
	t.reg = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		t.observe(m, o)
		return nil
	}, t.hits, t.misses, t.invalidations, t.flushes, t.swept)
	return t
}

func newCacheAttrs(spec cacheSpec) *cacheAttrs {
	base := []attribute.KeyValue{keyCacheName.String(spec.name), keyStore.String(spec.store)}
	set := func(kv ...attribute.KeyValue) attribute.Set { return attribute.NewSet(append(kv, base...)...) }
	op := func(name string) metric.MeasurementOption {
		return metric.WithAttributeSet(set(keyOperation.String(name)))
	}
	obs := func(kv ...attribute.KeyValue) metric.ObserveOption { return metric.WithAttributeSet(set(kv...)) }
	return &cacheAttrs{
		get: op("get"), mget: op("mget"), write: op("write"), reset: op("reset"),
		load:      metric.WithAttributeSet(set()),
		storeHit:  obs(keyLayer.String("store")),
		storeMiss: obs(keyLayer.String("store")),
		nearHit:   obs(keyLayer.String("near")),
		nearMiss:  obs(keyLayer.String("near")),
		cache:     obs(),
		expired:   obs(keyReason.String("expired")),
		evicted:   obs(keyReason.String("max_entries")),
	}
}

// observe reports every cache's counters from its Stats.
func (t *telemetry) observe(m *Manager, o metric.Observer) {
	m.mu.Lock()
	caches := make([]*Cache, 0, len(m.caches))
	for _, c := range m.caches {
		caches = append(caches, c)
	}
	m.mu.Unlock()
	for _, c := range caches {
		s, a := c.Stats(), c.attrs
		o.ObserveInt64(t.hits, int64(s.Hits-s.NearHits), a.storeHit)
		o.ObserveInt64(t.misses, int64(s.Misses), a.storeMiss)
		if c.near != nil {
			o.ObserveInt64(t.hits, int64(s.NearHits), a.nearHit)
			o.ObserveInt64(t.misses, int64(s.NearMisses), a.nearMiss)
			o.ObserveInt64(t.invalidations, int64(s.NearInvalidations), a.cache)
			o.ObserveInt64(t.flushes, int64(s.NearFlushes), a.cache)
		}
		o.ObserveInt64(t.swept, int64(s.ExpiredSwept), a.expired)
		o.ObserveInt64(t.swept, int64(s.Evictions), a.evicted)
	}
	o.ObserveInt64(t.swept, int64(m.sweptOther.Load()), t.sweptOther)
}

// opStart is the start of an operation to time: the zero time when the
// operation histogram is disabled (no SDK), so the clock is not read.
func (c *Cache) opStart(ctx context.Context) time.Time {
	if !c.m.tel.off && c.m.tel.op.Enabled(ctx) {
		return time.Now()
	}
	return time.Time{}
}

// opEnd records the duration of an operation begun at begin (see opStart).
func (c *Cache) opEnd(ctx context.Context, begin time.Time, attrs metric.MeasurementOption) {
	if !begin.IsZero() {
		c.m.tel.op.Record(ctx, time.Since(begin).Seconds(), attrs)
	}
}

// runLoader runs a Wrap loader inside a pgcoord.cache.load span and records
// its duration.
func runLoader[T any](ctx context.Context, c *Cache, fn func(ctx context.Context) (T, error)) (T, error) {
	ctx, span := c.m.tel.tracer.Start(ctx, "pgcoord.cache.load", trace.WithAttributes(keyCacheName.String(c.spec.name)))
	defer span.End()
	begin := time.Now()
	v, err := fn(ctx)
	c.m.tel.loader.Record(ctx, time.Since(begin).Seconds(), c.attrs.load)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "loader failed")
	}
	return v, err
}
