package listen

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"

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

	ch := attribute.String("messaging.destination.name", "ch")
	m := metrics.Collect(t)
	for _, c := range []struct {
		name string
		attr []attribute.KeyValue
		want int64
	}{
		{"pgcoord.listen.published", nil, 1},
		{"pgcoord.listen.delivered", nil, 2},
		{"pgcoord.listen.handler.errors", nil, 1},
		{"pgcoord.listen.handler.duration", []attribute.KeyValue{ch}, 2},
		{"pgcoord.listen.delivery.lag", []attribute.KeyValue{ch}, 2},
		{"pgcoord.listen.reconnects", nil, b.Stats().Reconnects},
		{"pgcoord.listen.healthy", nil, 1},
	} {
		require.Equal(t, c.want, otelxtest.Value(m[c.name], c.attr...), "%s %v", c.name, c.attr)
	}
	require.Positive(t, otelxtest.Value(m["pgcoord.listen.reconnects"]))
	require.Positive(t, otelxtest.Value(m["pgcoord.listen.catchup.reads"]))
	require.Equal(t, int64(1), otelxtest.Value(m["pgcoord.listen.published"], attribute.String("messaging.system", "pgcoord")))
}
