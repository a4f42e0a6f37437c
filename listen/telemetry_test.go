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
