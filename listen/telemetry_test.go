package listen

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgcoord/pgcoord/internal/otelxtest"
)

// Each listen instrument moves when its event happens: messages published
// and delivered, a handler error, handler durations and publish→deliver lags
// per channel, log reads, a listener reconnect, and the healthy gauge.
func TestInstruments(t *testing.T) {
	ctx, db := setup(t)
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
	ctx, db := setup(t)
	traces := otelxtest.NewTraces(t) // one collector for every instance
	cfg := &Config{TracerProvider: traces.Provider}
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

// The publisher's trace continues in the handler however the message
// arrives: published with PublishTx (the notification is a wake-up, the
// message is read from the log), with Publish but too large to travel
// inline (read from the log by a catch-up), or delivered locally to the
// publisher (IncludeSelf). The handler's process span is a child of the
// send span.
func TestTraceThroughLog(t *testing.T) {
	ctx, db := setup(t)
	traces := otelxtest.NewTraces(t)
	cfg := &Config{TracerProvider: traces.Provider, PollInterval: time.Hour}
	a := started(t, db, "inst-a", cfg)
	b := started(t, db, "inst-b", cfg)
	// Each handler answers with its trace id and its span's parent.
	parents := func(ps *PubSub, channel string) *inbox {
		got := &inbox{}
		_, err := ps.Subscribe(ctx, channel, func(ctx context.Context, m Message) error {
			span := trace.SpanFromContext(ctx).(sdktrace.ReadOnlySpan)
			m.Payload = []byte(span.SpanContext().TraceID().String() + "/" + span.Parent().SpanID().String())
			return got.handle(ctx, m)
		}, nil)
		require.NoError(t, err)
		return got
	}
	large := `"` + strings.Repeat("x", inlineLimit) + `"`
	for name, tc := range map[string]struct {
		on      *PubSub // receives
		publish func(ctx context.Context, channel string) error
	}{
		"PublishTx": {b, func(ctx context.Context, channel string) error {
			return pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return a.PublishTx(ctx, tx, channel, 1, nil) })
		}},
		"Publish read from the log": {b, func(ctx context.Context, channel string) error {
			return a.Publish(ctx, channel, []byte(large), nil)
		}},
		"Publish delivered locally": {a, func(ctx context.Context, channel string) error {
			return a.Publish(ctx, channel, 1, &PublishOpts{OnlySelf: true})
		}},
	} {
		t.Run(name, func(t *testing.T) {
			channel := strings.ReplaceAll(name, " ", "-")
			got := parents(tc.on, channel)
			parent, span := traces.Provider.Tracer("test").Start(ctx, "request")
			require.NoError(t, tc.publish(parent, channel))
			span.End()
			sends := traces.Spans("send " + channel)
			require.Len(t, sends, 1)
			require.Equal(t, span.SpanContext().SpanID(), sends[0].Parent.SpanID())
			got.waitPayload(t, span.SpanContext().TraceID().String()+"/"+sends[0].SpanContext.SpanID().String())
		})
	}
}

// The instruments of rarer events move when each happens, read back as
// Stats counts them: rows found by a catch-up (a PublishTx), messages dropped by a full buffer and recovered from the log,
// and dropped messages lost because retention pruned their rows before
// they were recovered.
func TestInstrumentsDroppedRecoveredLost(t *testing.T) {
	ctx, db := setup(t)
	metrics := otelxtest.NewMetrics(t)
	pub := started(t, db, "inst-pub", &Config{Retention: time.Microsecond, PruneInterval: -1})
	sub := started(t, db, "inst-sub", &Config{MeterProvider: metrics.Provider, PruneInterval: -1})
	// blocked subscribes a handler that holds its first message until
	// released, with room for one more.
	blocked := func(channel string) (*inbox, chan struct{}) {
		got, release := &inbox{}, make(chan struct{})
		var first sync.Once
		_, err := sub.Subscribe(ctx, channel, func(ctx context.Context, m Message) error {
			first.Do(func() { <-release })
			return got.handle(ctx, m)
		}, &SubscribeOpts{BufferSize: 1})
		require.NoError(t, err)
		return got, release
	}
	publish := func(channel string, n int) {
		for i := range n {
			require.NoError(t, pub.Publish(ctx, channel, i, nil))
		}
	}

	woken := subscribe(t, sub, "tx", nil) // a PublishTx's notification is a wake-up: a catch-up reads it
	require.NoError(t, pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return pub.PublishTx(ctx, tx, "tx", 1, nil) }))
	woken.waitLen(t, 1)

	got, release := blocked("recovered")
	publish("recovered", 6)
	waitState(t, sub, waitFor, func() bool { return sub.Stats().Dropped > 0 })
	close(release)
	got.waitLen(t, 6)
	waitState(t, sub, waitFor, func() bool { return sub.Stats().Recovered == sub.Stats().Dropped })

	dropped := sub.Stats().Dropped
	_, release = blocked("lost")
	publish("lost", 6)
	waitState(t, sub, waitFor, func() bool { return sub.Stats().Dropped > dropped })
	for _, step := range []string{"marker", "prune"} { // the second run finds the first's marker older than Retention
		_, err := pub.prune(ctx)
		require.NoError(t, err, step)
	}
	close(release)
	waitState(t, sub, waitFor, func() bool { return sub.Stats().Lost > 0 })

	st := sub.Stats()
	require.Positive(t, st.CaughtUp)
	require.Positive(t, st.Recovered)
	metrics.Require(t,
		otelxtest.Want{Name: "pgcoord.listen.catchup.rows", Value: st.CaughtUp},
		otelxtest.Want{Name: "pgcoord.listen.dropped", Value: st.Dropped},
		otelxtest.Want{Name: "pgcoord.listen.recovered", Value: st.Recovered},
		otelxtest.Want{Name: "pgcoord.listen.lost", Value: st.Lost},
	)
}

// A switchover (the listener finds its watermark above the server's
// transaction ids, as after a point-in-time restore) moves
// pgcoord.listen.switchovers; the listener stays healthy. (A reconnect is
// in TestInstruments.)
func TestInstrumentsSwitchover(t *testing.T) {
	ctx, db := setup(t)
	metrics := otelxtest.NewMetrics(t)
	pub := started(t, db, "inst-pub", nil)
	sub := started(t, db, "inst-sub", &Config{MeterProvider: metrics.Provider})
	got := subscribe(t, sub, "ch", nil)
	barrier(t, pub, got, "ch")
	require.Zero(t, metrics.Value(t, "pgcoord.listen.switchovers"))

	sub.led.shiftXmax(1 << 32) // as if the transaction ids had gone back
	waitState(t, sub, switchoverWait, func() bool { return sub.Stats().Switchovers == 1 && sub.Healthy() })
	require.NoError(t, pub.Publish(ctx, "ch", "after", nil))
	got.waitPayload(t, `"after"`)
	metrics.Require(t,
		otelxtest.Want{Name: "pgcoord.listen.switchovers", Value: 1},
		otelxtest.Want{Name: "pgcoord.listen.healthy", Value: 1},
	)
}
