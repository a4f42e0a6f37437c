package pgcache_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	"github.com/pgcoord/pgcoord/internal/otelxtest"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/pgcache"
)

// Each cache instrument moves when its event happens: near and store hits
// and misses, near invalidations and flushes from another instance's
// writes, operation and loader durations (with the loader's span), and the
// sweeper's and the LRU's deletions.
func TestInstruments(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	metrics, traces := otelxtest.NewMetrics(t), otelxtest.NewTraces(t)
	a := newNearInstance(t, db, "inst-a", pgcache.CacheConfig{})
	b := newNearInstanceWith(t, db, "inst-b", pgcache.CacheConfig{}, pgcache.ManagerConfig{MeterProvider: metrics.Provider, TracerProvider: traces.Provider})

	_, ok := getString(t, b.cache, "k") // near miss, store miss
	require.False(t, ok)
	require.NoError(t, a.cache.Set(ctx, "k", "v", 0))
	waitInvalidations(t, b, 1)
	for range 2 { // near miss and store hit, then a near hit
		_, ok := getString(t, b.cache, "k")
		require.True(t, ok)
	}
	require.NoError(t, a.cache.Reset(ctx))
	require.Eventually(t, func() bool { return b.cache.Stats().NearFlushes > 0 }, waitFor, tick)
	require.NoError(t, b.cache.Set(ctx, "w", 1, 0))
	loaded := newCache(t, b.m, pgcache.CacheConfig{Name: "loaded"})
	_, err := loaded.Wrap(ctx, "wrapped", func(context.Context) (any, error) { return 1, nil }, 0)
	require.NoError(t, err)
	_, err = loaded.Wrap(ctx, "failing", func(context.Context) (any, error) { return nil, errors.New("boom") }, 0)
	require.Error(t, err)

	lru := newCache(t, b.m, pgcache.CacheConfig{Name: "lru", Store: pgcache.StoreMemory, MaxEntries: 1})
	require.NoError(t, lru.MSet(ctx, []pgcache.Item{{Key: "x", Value: 1}, {Key: "y", Value: 2}}, 0))
	expiring := newCache(t, b.m, pgcache.CacheConfig{Name: "expiring"})
	require.NoError(t, expiring.Set(ctx, "e", 1, time.Millisecond))
	require.Eventually(t, func() bool {
		require.NoError(t, b.m.Sweep(ctx))
		return expiring.Stats().ExpiredSwept == 1
	}, waitFor, tick)

	named := func(n string) attribute.KeyValue { return attribute.String("pgcoord.cache.name", n) }
	layer := func(l string) attribute.KeyValue { return attribute.String("pgcoord.cache.layer", l) }
	op := func(o string) attribute.KeyValue { return attribute.String("pgcoord.cache.operation", o) }
	reason := func(r string) attribute.KeyValue { return attribute.String("pgcoord.cache.reason", r) }
	got := metrics.Collect(t)
	for _, c := range []struct {
		name  string
		attrs []attribute.KeyValue
		want  int64
	}{
		{"pgcoord.cache.hits", []attribute.KeyValue{named("near"), layer("near")}, 1},
		{"pgcoord.cache.hits", []attribute.KeyValue{named("near"), layer("store")}, 1},
		{"pgcoord.cache.misses", []attribute.KeyValue{named("near"), layer("near")}, 2},
		{"pgcoord.cache.misses", []attribute.KeyValue{named("near"), layer("store")}, 1},
		{"pgcoord.cache.near.flushes", []attribute.KeyValue{named("near")}, int64(b.cache.Stats().NearFlushes)},
		{"pgcoord.cache.near.invalidations", []attribute.KeyValue{named("near")}, int64(b.cache.Stats().NearInvalidations)},
		{"pgcoord.cache.operation.duration", []attribute.KeyValue{named("near"), op("get")}, 3},
		{"pgcoord.cache.operation.duration", []attribute.KeyValue{named("near"), op("write")}, 1},
		{"pgcoord.cache.operation.duration", []attribute.KeyValue{named("loaded"), op("write")}, 1}, // the loaded value stored
		{"pgcoord.cache.loader.duration", []attribute.KeyValue{named("loaded")}, 2},
		{"pgcoord.cache.swept", []attribute.KeyValue{named("lru"), reason("max_entries")}, 1},
		{"pgcoord.cache.swept", []attribute.KeyValue{named("expiring"), reason("expired")}, 1},
	} {
		require.Equal(t, c.want, otelxtest.Value(got[c.name], c.attrs...), "%s %v", c.name, c.attrs)
	}
	require.Positive(t, otelxtest.Value(got["pgcoord.cache.near.invalidations"]))
	require.Positive(t, otelxtest.Value(got["pgcoord.cache.near.flushes"]))
	// a's manager has no provider of its own: nothing of it lands here.
	require.Zero(t, otelxtest.Value(got["pgcoord.cache.operation.duration"], op("reset")))

	spans := traces.Spans("pgcoord.cache.load")
	require.Len(t, spans, 2)
	require.Equal(t, codes.Unset, spans[0].Status.Code)
	require.Equal(t, codes.Error, spans[1].Status.Code, "the failing loader's span")
}
