package app_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/otelxtest"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/queue"
)

// Config.MeterProvider reaches every component: what they record lands in
// the App's provider.
func TestMeterProviderReachesComponents(t *testing.T) {
	ctx, db := pgtest.Setup(t)
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

// One trace crosses instances from an HTTP request: a server span started
// as an HTTP middleware would on instance "front", a queue message and a
// sync message published inside it, and on instance "back" the sync
// handler's span (its child, through the send span) and the queue Process
// span (River's work span, which links to the insert span: a link, not a
// parent, as otelriver gives) are in the request's trace.
func TestTraceFromHTTPAcrossInstances(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	traces := otelxtest.NewTraces(t) // one collector for both instances
	newInstance := func(id string) *app.App {
		a, err := app.New(ctx, app.Config{Name: "trace", Pool: db.NewPool(t, &pgtest.PoolOptions{AppName: id}),
			InstanceID: id, TracerProvider: traces.Provider, Logger: slog.New(slog.DiscardHandler)})
		require.NoError(t, err)
		t.Cleanup(func() { _ = a.Stop(context.Background()) })
		return a
	}
	front, back := newInstance("front"), newInstance("back")
	// Each handler hands over its own span (the SDK's, readable).
	synced, processed := make(chan sdktrace.ReadOnlySpan, 1), make(chan sdktrace.ReadOnlySpan, 1)
	_, err := back.SyncMessages().Subscribe(ctx, "orders", func(ctx context.Context, _ listen.Message) error {
		synced <- trace.SpanFromContext(ctx).(sdktrace.ReadOnlySpan)
		return nil
	})
	require.NoError(t, err)
	require.NoError(t, back.EventQueue().Subscribe(ctx, "orders", queue.Consumer{Process: func(ctx context.Context, _ queue.Message) error {
		processed <- trace.SpanFromContext(ctx).(sdktrace.ReadOnlySpan)
		return nil
	}}))
	require.NoError(t, front.Start(ctx))
	require.NoError(t, back.Start(ctx))

	var server trace.SpanContext
	middleware := func(next http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			ctx, span := traces.Provider.Tracer("http").Start(r.Context(), r.Method+" "+r.URL.Path, trace.WithSpanKind(trace.SpanKindServer))
			defer span.End()
			server = span.SpanContext()
			next(w, r.WithContext(ctx))
		}
	}
	rec := httptest.NewRecorder()
	middleware(func(w http.ResponseWriter, r *http.Request) {
		if _, err := front.EventQueue().Publish(r.Context(), "orders", map[string]int{"id": 1}, nil); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if err := front.SyncMessages().Publish(r.Context(), "orders", "created", nil); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})(rec, httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(`{}`)))
	require.Equal(t, http.StatusNoContent, rec.Code, rec.Body.String())

	// The publishing spans are children of the server span.
	children := map[string]trace.SpanContext{}
	for _, s := range traces.Spans("") {
		if s.Parent.SpanID() == server.SpanID() {
			children[s.Name] = s.SpanContext
		}
	}
	send, insert := children["send "+listen.SyncChannelPrefix+"orders"], children["river.insert_many"]
	require.True(t, send.IsValid(), "send span, got %v", children)
	require.True(t, insert.IsValid(), "river.insert_many span, got %v", children)

	s := <-synced
	require.Equal(t, server.TraceID(), s.SpanContext().TraceID(), "sync handler in the request's trace")
	require.Equal(t, send.SpanID(), s.Parent().SpanID(), "sync handler's parent: the send span")
	p := <-processed
	require.Len(t, p.Links(), 1, "queue Process (%s) links the insert span", p.Name())
	require.Equal(t, server.TraceID(), p.Links()[0].SpanContext.TraceID(), "queue Process linked to the request's trace")
	require.Equal(t, insert.SpanID(), p.Links()[0].SpanContext.SpanID())
}
