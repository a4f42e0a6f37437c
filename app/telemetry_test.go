package app_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/otelxtest"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// Config.MeterProvider reaches every component: what they record lands in
// the App's provider.
func TestMeterProviderReachesComponents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	metrics := otelxtest.NewMetrics(t)
	a, err := app.New(ctx, app.Config{Name: "otel", Pool: db.Pool, InstanceID: "i1", MeterProvider: metrics.Provider})
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Stop(context.Background()) })
	_, err = a.EventQueue().Publish(ctx, "c", 1, nil)
	require.NoError(t, err)
	require.Equal(t, int64(1), metrics.Value(t, "pgcoord.queue.published"))
	require.NoError(t, a.Start(ctx))
	_, _, err = a.Cache().Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, int64(1), metrics.Value(t, "pgcoord.cache.misses"))
}
