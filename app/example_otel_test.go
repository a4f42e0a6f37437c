package app_test

import (
	"context"
	"fmt"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// An OpenTelemetry SDK's providers in app.Config receive every component's
// metrics and spans (an application would export them with OTLP or
// Prometheus; a manual reader shows them here).
func Example_openTelemetry() {
	db, cleanup := pgtest.ExampleDB()
	defer cleanup()
	ctx := context.Background()

	reader := sdkmetric.NewManualReader()
	meters := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	tracer := sdktrace.NewTracerProvider()
	defer meters.Shutdown(ctx)
	defer tracer.Shutdown(ctx)

	a, err := app.New(ctx, app.Config{Pool: db.Pool, MeterProvider: meters, TracerProvider: tracer})
	if err != nil {
		panic(err)
	}
	if err := a.Start(ctx); err != nil {
		panic(err)
	}
	defer a.Stop(ctx)
	_, _, _ = a.Cache().Get(ctx, "missing")

	var rm metricdata.ResourceMetrics
	_ = reader.Collect(ctx, &rm)
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == "pgcoord.cache.misses" {
				fmt.Println(sm.Scope.Name, m.Name, m.Data.(metricdata.Sum[int64]).DataPoints[0].Value)
			}
		}
	}
	// Output:
	// github.com/pgcoord/pgcoord/cache pgcoord.cache.misses 1
}
