package queue_test

import (
	"context"
	"errors"
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

	dest := func(ch string) attribute.KeyValue { return attribute.String("messaging.destination.name", ch) }
	got := metrics.Collect(t)
	for _, c := range []struct {
		name, channel string
		want          int64
	}{
		{"pgcoord.queue.published", "ok", 1},
		{"pgcoord.queue.published", "bad", 1},
		{"pgcoord.queue.started", "ok", 1},
		{"pgcoord.queue.completed", "ok", 1},
		{"pgcoord.queue.process.duration", "ok", 1},
		{"pgcoord.queue.started", "bad", 2},
		{"pgcoord.queue.failed", "bad", 2},
		{"pgcoord.queue.retried", "bad", 1},
		{"pgcoord.queue.discarded", "bad", 1},
		{"pgcoord.queue.completed", "bad", 0},
		{"pgcoord.queue.cancelled", "cancel", 1},
		{"pgcoord.queue.failed", "cancel", 0},
	} {
		require.Equal(t, c.want, otelxtest.Value(got[c.name], dest(c.channel), attribute.String("messaging.system", "pgcoord")), "%s %s", c.name, c.channel)
	}
	state := func(s string) attribute.KeyValue { return attribute.String("pgcoord.queue.state", s) }
	require.Equal(t, int64(1), otelxtest.Value(got["pgcoord.queue.depth"], dest("ok"), state("completed")))
	require.Equal(t, int64(1), otelxtest.Value(got["pgcoord.queue.depth"], dest("bad"), state("discarded")))
	require.Equal(t, int64(1), otelxtest.Value(got["pgcoord.queue.depth"], dest("cancel"), state("cancelled")))
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
