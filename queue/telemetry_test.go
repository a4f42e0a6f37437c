package queue_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"

	"github.com/pgcoord/pgcoord/internal/otelxtest"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/queue"
)

// Each queue instrument moves when its event happens: a message that
// completes, one that fails, is retried and discarded, one cancelled while
// running; the depth gauge reads the states back. River's own spans
// (otelriver) appear, and the work span links to the publisher's trace.
func TestInstruments(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	metrics, traces := otelxtest.NewMetrics(t), otelxtest.NewTraces(t)
	q := newQueue(t, db, nil, &queue.Config{RetryBackoff: 10 * time.Millisecond, MeterProvider: metrics.Provider, TracerProvider: traces.Provider})
	ctx := ctxT(t)
	running := make(chan struct{})
	for ch, process := range map[string]func(context.Context, queue.Message) error{
		"ok":  func(context.Context, queue.Message) error { return nil },
		"bad": func(context.Context, queue.Message) error { return errors.New("boom") },
		"cancel": func(ctx context.Context, _ queue.Message) error {
			close(running)
			<-ctx.Done()
			return ctx.Err()
		},
	} {
		require.NoError(t, q.Subscribe(ctx, ch, queue.Consumer{Concurrency: 1, PollInterval: 20 * time.Millisecond, Process: process}))
	}
	start(t, q)

	parent, span := traces.Provider.Tracer("test").Start(ctx, "request")
	ok, err := q.Publish(parent, "ok", 1, nil)
	span.End()
	require.NoError(t, err)
	bad, err := q.Publish(ctx, "bad", 1, &queue.PublishOpts{MaxRetries: 1})
	require.NoError(t, err)
	cancelled, err := q.Publish(ctx, "cancel", 1, nil)
	require.NoError(t, err)
	<-running
	require.NoError(t, q.Cancel(ctx, cancelled))
	waitState(t, db, ok, "completed")
	waitState(t, db, bad, "discarded")
	waitState(t, db, cancelled, "cancelled")

	// Per channel, each instrument's value ("depth/<state>": the depth gauge
	// in that state).
	var wants []otelxtest.Want
	for channel, values := range map[string]map[string]int64{
		"ok":     {"published": 1, "started": 1, "completed": 1, "process.duration": 1, "depth/completed": 1},
		"bad":    {"published": 1, "started": 2, "failed": 2, "retried": 1, "discarded": 1, "completed": 0, "depth/discarded": 1},
		"cancel": {"cancelled": 1, "failed": 0, "depth/cancelled": 1},
	} {
		for what, value := range values {
			attrs := []attribute.KeyValue{attribute.String("messaging.system", "pgcoord"), attribute.String("messaging.destination.name", channel)}
			if name, state, ok := strings.Cut(what, "/"); ok {
				what, attrs = name, append(attrs, attribute.String("pgcoord.queue.state", state))
			}
			wants = append(wants, otelxtest.Want{Name: "pgcoord.queue." + what, Attrs: attrs, Value: value})
		}
	}
	got := metrics.Require(t, wants...)
	require.Positive(t, otelxtest.Value(got["river.work_count"]), "otelriver's metrics")

	// otelriver: the insert span is a child of the publisher's span, and the
	// work span of message ok links back to that trace.
	inserts := traces.Spans("river.insert_many")
	require.NotEmpty(t, inserts)
	require.Equal(t, span.SpanContext().TraceID(), inserts[0].SpanContext.TraceID())
	var linked bool
	for _, w := range traces.Spans("river.work") {
		for _, l := range w.Links {
			linked = linked || l.SpanContext.TraceID() == span.SpanContext().TraceID()
		}
	}
	require.True(t, linked, "no river.work span links to the publisher's trace")
}

// A trace crosses instances: a message published inside a span on one
// instance is processed on another, whose River work span (otelriver) links
// to the publisher's trace; the insert span is a child of the publisher's.
func TestTraceCrossesInstances(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	traces := otelxtest.NewTraces(t) // one collector for both instances
	ctx := ctxT(t)
	publisher := newQueue(t, db, db.NewPool(t, &pgtest.PoolOptions{AppName: "publisher"}), &queue.Config{InstanceID: "publisher", TracerProvider: traces.Provider})
	consumer := newQueue(t, db, db.NewPool(t, &pgtest.PoolOptions{AppName: "consumer"}), &queue.Config{InstanceID: "consumer", TracerProvider: traces.Provider})
	done := make(chan struct{})
	require.NoError(t, consumer.Subscribe(ctx, "c", queue.Consumer{Process: func(context.Context, queue.Message) error { close(done); return nil }}))
	start(t, consumer)

	parent, span := traces.Provider.Tracer("test").Start(ctx, "http request")
	id, err := publisher.Publish(parent, "c", 1, nil)
	span.End()
	require.NoError(t, err)
	<-done
	waitState(t, db, id, "completed")

	trace := span.SpanContext().TraceID()
	inserts := traces.Spans("river.insert_many")
	require.Len(t, inserts, 1)
	require.Equal(t, trace, inserts[0].SpanContext.TraceID())
	works := traces.Spans("river.work")
	require.Len(t, works, 1)
	require.Len(t, works[0].Links, 1)
	require.Equal(t, trace, works[0].Links[0].SpanContext.TraceID())
	require.Equal(t, inserts[0].SpanContext.SpanID(), works[0].Links[0].SpanContext.SpanID())
}
