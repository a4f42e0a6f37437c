package listen

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgcoord/pgcoord/internal/otelxtest"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// Each listen instrument moves when its event happens: messages published
// and delivered, a handler error, handler durations and publish→deliver lags
// per channel, log reads, a listener reconnect, and the healthy gauge.
func TestInstruments(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	metrics := otelxtest.NewMetrics(t)
	a := started(t, db, "inst-a", nil)
	b := started(t, db, "inst-b", &Config{MeterProvider: metrics.Provider})
	got := &inbox{}
	_, err := b.Subscribe(ctx, "ch", func(ctx context.Context, m Message) error {
		_ = got.handle(ctx, m)
		if string(m.Payload) == `"bad"` {
			return errors.New("boom")
		}
		return nil
	}, nil)
	require.NoError(t, err)
	require.NoError(t, a.Publish(ctx, "ch", []byte(`"ok"`), nil))
	require.NoError(t, a.Publish(ctx, "ch", []byte(`"bad"`), nil))
	require.NoError(t, b.Publish(ctx, "other", []byte(`1`), nil))
	waitState(t, b, 20*time.Second, func() bool { return b.Stats().Delivered == 2 })

	before := b.Stats().Reconnects
	_, err = db.TerminateBackends(ctx, "inst-b")
	require.NoError(t, err)
	waitState(t, b, 20*time.Second, func() bool { return b.Stats().Reconnects > before && b.Healthy() })

	ch := []attribute.KeyValue{attribute.String("messaging.destination.name", "ch")}
	m := metrics.Require(t,
		otelxtest.Want{Name: "pgcoord.listen.published", Value: 1},
		otelxtest.Want{Name: "pgcoord.listen.delivered", Value: 2},
		otelxtest.Want{Name: "pgcoord.listen.handler.errors", Value: 1},
		otelxtest.Want{Name: "pgcoord.listen.handler.duration", Attrs: ch, Value: 2},
		otelxtest.Want{Name: "pgcoord.listen.delivery.lag", Attrs: ch, Value: 2},
		otelxtest.Want{Name: "pgcoord.listen.reconnects", Value: b.Stats().Reconnects},
		otelxtest.Want{Name: "pgcoord.listen.healthy", Value: 1},
	)
	require.Positive(t, otelxtest.Value(m["pgcoord.listen.reconnects"]))
	require.Positive(t, otelxtest.Value(m["pgcoord.listen.catchup.reads"]))
	require.Equal(t, int64(1), otelxtest.Value(m["pgcoord.listen.published"], attribute.String("messaging.system", "pgcoord")))
}

// A trace crosses instances: a message published inside a span on one
// instance is handled on two others, each handler's span a child of the
// publisher's send span, in the publisher's trace; the handler's ctx
// carries it.
func TestTraceCrossesInstances(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	traces := otelxtest.NewTraces(t) // one collector for every instance
	// No poll: a poll may find the message in the log first, and the log
	// keeps no headers (see Message.Headers).
	cfg := &Config{TracerProvider: traces.Provider, PollInterval: time.Hour}
	a := started(t, db, "inst-a", cfg)
	var inboxes []*inbox
	for _, name := range []string{"inst-b", "inst-c"} {
		got := &inbox{}
		_, err := started(t, db, name, cfg).Subscribe(ctx, "ch", func(ctx context.Context, m Message) error {
			m.Payload = []byte(`"` + trace.SpanContextFromContext(ctx).TraceID().String() + `"`)
			return got.handle(ctx, m)
		}, nil)
		require.NoError(t, err)
		inboxes = append(inboxes, got)
	}
	parent, span := traces.Provider.Tracer("test").Start(ctx, "http request")
	require.NoError(t, a.Publish(parent, "ch", 1, nil))
	span.End()
	want := span.SpanContext().TraceID()
	for _, got := range inboxes {
		got.waitPayload(t, `"`+want.String()+`"`)
	}

	sends := traces.Spans("send ch")
	require.Len(t, sends, 1)
	require.Equal(t, want, sends[0].SpanContext.TraceID())
	require.Equal(t, span.SpanContext().SpanID(), sends[0].Parent.SpanID())
	require.Eventually(t, func() bool { return len(traces.Spans("process ch")) == 2 }, 20*time.Second, 5*time.Millisecond) // ended just after the handlers returned
	for _, p := range traces.Spans("process ch") {
		require.Equal(t, want, p.SpanContext.TraceID())
		require.Equal(t, sends[0].SpanContext.SpanID(), p.Parent.SpanID())
	}
}
