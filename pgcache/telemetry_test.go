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
	waitNear(t, b.cache, func() bool { return b.cache.Stats().NearFlushes > 0 }, "a near flush")
	require.NoError(t, b.cache.Set(ctx, "w", 1, 0))
	loaded := newCache(t, b.m, pgcache.CacheConfig{Name: "loaded"})
	_, err := loaded.Wrap(ctx, "wrapped", func(context.Context) (any, error) { return 1, nil }, 0)
	require.NoError(t, err)
	_, err = loaded.Wrap(ctx, "failing", func(context.Context) (any, error) { return nil, errors.New("boom") }, 0)
	require.Error(t, err)

	lru := newCache(t, b.m, pgcache.CacheConfig{Name: "lru", Store: pgcache.StoreMemory, MaxEntries: 1})
	require.NoError(t, lru.MSet(ctx, []pgcache.Item{{Key: "x", Value: 1}, {Key: "y", Value: 2}}, 0))
	expiring := newCache(t, b.m, pgcache.CacheConfig{Name: "expiring"})
	require.NoError(t, expiring.Set(ctx, "e", 1, time.Hour))
	_, err = db.Pool.Exec(ctx, `UPDATE pgcoord.cache_entries SET expires_at = now() - interval '1 millisecond' WHERE prefix = 'expiring'`)
	require.NoError(t, err) // expired by the database clock now, without waiting
	require.NoError(t, b.m.Sweep(ctx))
	require.EqualValues(t, 1, expiring.Stats().ExpiredSwept)

	named := func(n string) attribute.KeyValue { return attribute.String("pgcoord.cache.name", n) }
	layer := func(l string) attribute.KeyValue { return attribute.String("pgcoord.cache.layer", l) }
	op := func(o string) attribute.KeyValue { return attribute.String("pgcoord.cache.operation", o) }
	reason := func(r string) attribute.KeyValue { return attribute.String("pgcoord.cache.reason", r) }
	want := func(name string, v int64, attrs ...attribute.KeyValue) otelxtest.Want {
		return otelxtest.Want{Name: name, Attrs: attrs, Value: v}
	}
	got := metrics.Require(t,
		want("pgcoord.cache.hits", 1, named("near"), layer("near")),
		want("pgcoord.cache.hits", 1, named("near"), layer("store")),
		want("pgcoord.cache.misses", 2, named("near"), layer("near")),
		want("pgcoord.cache.misses", 1, named("near"), layer("store")),
		want("pgcoord.cache.near.flushes", int64(b.cache.Stats().NearFlushes), named("near")),
		want("pgcoord.cache.near.invalidations", int64(b.cache.Stats().NearInvalidations), named("near")),
		want("pgcoord.cache.operation.duration", 3, named("near"), op("get")),
		want("pgcoord.cache.operation.duration", 1, named("near"), op("write")),
		want("pgcoord.cache.operation.duration", 1, named("loaded"), op("write")), // the loaded value stored
		want("pgcoord.cache.loader.duration", 2, named("loaded")),
		want("pgcoord.cache.swept", 1, named("lru"), reason("max_entries")),
		want("pgcoord.cache.swept", 1, named("expiring"), reason("expired")),
		// a's manager has no provider of its own: nothing of it lands here.
		want("pgcoord.cache.operation.duration", 0, op("reset")),
	)
	require.Positive(t, otelxtest.Value(got["pgcoord.cache.near.invalidations"]))
	require.Positive(t, otelxtest.Value(got["pgcoord.cache.near.flushes"]))

	spans := traces.Spans("pgcoord.cache.load")
	require.Len(t, spans, 2)
	require.Equal(t, codes.Unset, spans[0].Status.Code)
	require.Equal(t, codes.Error, spans[1].Status.Code, "the failing loader's span")
}
