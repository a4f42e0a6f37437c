package pgcache

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Counter is a set of integer counters stored in a cache's namespace (a
// counter "k" is the cache key "k", readable with Get as a JSON number). On
// the postgres store every call is one atomic statement, so increments from
// any number of instances are never lost.
type Counter struct {
	c *Cache
}

// Counter returns the counters of this cache.
func (c *Cache) Counter() *Counter { return &Counter{c: c} }

// Incr adds 1 to key and returns the new value. See IncrBy.
func (k *Counter) Incr(ctx context.Context, key string, ttl time.Duration) (int64, error) {
	return k.IncrBy(ctx, key, 1, ttl)
}

// IncrBy adds n to key and returns the new value. A missing or expired
// counter starts from 0 and gets ttl (0: the cache's TTL, NoExpiry: none);
// an existing one keeps its expiry (as NocoBase's Redis counter). A stored
// value that is not an integer returns an error wrapping ErrNotInteger.
func (k *Counter) IncrBy(ctx context.Context, key string, n int64, ttl time.Duration) (int64, error) {
	c := k.c
	if err := c.check(ctx); err != nil {
		return 0, err
	}
	if err := validateKey(key); err != nil {
		return 0, err
	}
	var v int64
	err := c.write(ctx, []string{key}, false, func(ctx context.Context, q querier) error {
		var err error
		v, err = c.st.incrBy(ctx, q, key, n, c.ttlFor(ttl))
		return err
	})
	if err != nil {
		return 0, opErr("incr", key, err)
	}
	return v, nil
}

// Get returns the value of key, 0 when it is missing or expired.
func (k *Counter) Get(ctx context.Context, key string) (int64, error) {
	c := k.c
	if err := c.check(ctx); err != nil {
		return 0, err
	}
	if err := validateKey(key); err != nil {
		return 0, err
	}
	// Counters bypass the near cache: they change too often to be worth it.
	e, _, ok, err := c.st.get(ctx, key)
	if err != nil {
		return 0, opErr("counter get", key, err)
	}
	if !ok {
		return 0, nil
	}
	var v int64
	if e.kind != kindJSON {
		return 0, fmt.Errorf("%w: %q holds raw bytes", ErrNotInteger, key)
	}
	if err := json.Unmarshal(e.raw, &v); err != nil {
		return 0, fmt.Errorf("%w: %q: %w", ErrNotInteger, key, err)
	}
	return v, nil
}

// Reset deletes key; Get then returns 0.
func (k *Counter) Reset(ctx context.Context, key string) error {
	return k.c.Del(ctx, key)
}
