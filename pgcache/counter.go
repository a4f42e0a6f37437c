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
// any number of instances are never lost. A counter created by an increment
// expires after the cache's TTL (CacheConfig.TTL, CounterConfig.TTL; none by
// default) and keeps that expiry as it is incremented (NocoBase's Redis
// counter); an expired counter starts again from 0.
type Counter struct {
	c *Cache
}

// CounterConfig configures [Manager.CreateCounter].
type CounterConfig struct {
	// Name identifies the counters' cache on the Manager. Required.
	Name string
	// Prefix namespaces the counters' keys. Defaults to Name.
	Prefix string
	// Store is StorePostgres or StoreMemory. Defaults to
	// ManagerConfig.DefaultStore.
	Store string
	// TTL is the expiry of a counter, set when an increment creates it.
	// Defaults to 0: no expiry.
	TTL time.Duration
}

// CreateCounter creates counters in a cache of their own (NocoBase's
// createCounter): a cache named cfg.Name, as [Manager.CreateCache] makes it
// from the same fields. Counters of an existing cache are [Cache.Counter].
func (m *Manager) CreateCounter(ctx context.Context, cfg CounterConfig) (*Counter, error) {
	c, err := m.CreateCache(ctx, CacheConfig{Name: cfg.Name, Prefix: cfg.Prefix, Store: cfg.Store, TTL: cfg.TTL})
	if err != nil {
		return nil, err
	}
	return c.Counter(), nil
}

// Counter returns the counters of this cache; they expire after the cache's TTL.
func (c *Cache) Counter() *Counter { return &Counter{c: c} }

// Incr adds 1 to key and returns the new value. See IncrBy.
func (k *Counter) Incr(ctx context.Context, key string) (int64, error) {
	return k.IncrBy(ctx, key, 1)
}

// IncrBy adds n to key and returns the new value. A missing or expired
// counter starts from 0 and gets the cache's TTL; an existing one keeps its
// expiry. A stored value that is not an integer (or an overflow) returns an
// error wrapping ErrNotInteger.
func (k *Counter) IncrBy(ctx context.Context, key string, n int64) (int64, error) {
	c := k.c
	if err := c.checkKeys(ctx, key); err != nil {
		return 0, err
	}
	var v int64
	err := c.write(ctx, []string{key}, false, func(ctx context.Context, q querier) error {
		var err error
		v, err = c.st.incrBy(ctx, q, key, n, c.ttlFor(0))
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
	if err := c.checkKeys(ctx, key); err != nil {
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
