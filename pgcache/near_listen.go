package pgcache

import "context"

// newListenBus subscribes a near cache to its invalidation channel.
// Placeholder until package listen lands.
func newListenBus(ctx context.Context, m *Manager, channel string, onMsg func(nearMessage), onResync func()) (nearBus, error) {
	return nil, ErrNearCacheNeedsPubSub
}
