package pgcache

import (
	"context"
	"time"
)

// store is where a cache keeps its entries. ttl > 0 means "expires after
// ttl"; ttl <= 0 means no expiry (the Cache resolves its default first).
// Keys are the caller's keys; the store adds the app and prefix namespace.
type store interface {
	get(ctx context.Context, key string) (encoded, time.Duration, bool, error)
	mget(ctx context.Context, keys []string) ([]encoded, []bool, error)
	set(ctx context.Context, q querier, key string, e encoded, ttl time.Duration) error
	mset(ctx context.Context, q querier, keys []string, vals []encoded, ttl time.Duration) error
	del(ctx context.Context, q querier, keys []string) error
	reset(ctx context.Context, q querier) error
	keys(ctx context.Context, pattern string) ([]string, error)
	// ttl returns the remaining time or NoExpiry, and whether key is there.
	ttl(ctx context.Context, key string) (time.Duration, bool, error)
	incrBy(ctx context.Context, q querier, key string, n int64, ttl time.Duration) (int64, error)
	objSet(ctx context.Context, q querier, key, field string, e encoded, ttl time.Duration) error
	objDel(ctx context.Context, q querier, key, field string) error
}

// noTTL is what store.get returns as remaining time for an entry without expiry.
const noTTL = time.Duration(-1)
