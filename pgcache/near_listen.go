package pgcache

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/pgcoord/pgcoord/listen"
)

// listenBus receives the invalidations of a near cache's prefix from every
// instance (Manager.publishNear sends them) on the app's listen.PubSub.
type listenBus struct {
	ps      *listen.PubSub
	sub     *listen.Subscription
	channel string
}

// newListenBus subscribes a near cache to its invalidation channel.
func newListenBus(ctx context.Context, m *Manager, channel string, onMsg func(nearMessage), onResync func()) (*listenBus, error) {
	ps := m.cfg.PubSub
	if ps == nil {
		return nil, ErrNearCacheNeedsPubSub
	}
	b := &listenBus{ps: ps, channel: channel}
	sub, err := ps.Subscribe(ctx, channel, func(ctx context.Context, msg listen.Message) error {
		var nm nearMessage
		if err := json.Unmarshal(msg.Payload, &nm); err != nil {
			// Not ours to understand: dropping everything is always safe.
			m.logger.WarnContext(ctx, "pgcache: bad near-cache invalidation; flushing", slog.String("channel", channel), slog.Any("error", err))
			nm = nearMessage{Reset: true}
		}
		onMsg(nm)
		return nil
	}, &listen.SubscribeOpts{OnResync: func(context.Context) { onResync() }})
	if err != nil {
		return nil, fmt.Errorf("pgcache: near cache: subscribe: %w", err)
	}
	b.sub = sub
	return b, nil
}

// healthy is false while the listener may be missing invalidations.
func (b *listenBus) healthy() bool { return b.ps.Healthy() }

// epoch changes whenever the listener reconnected: invalidations may have
// been missed before it (listen.PubSub.Epoch).
func (b *listenBus) epoch() int64 { return b.ps.Epoch() }

func (b *listenBus) close() { b.sub.Unsubscribe() }
