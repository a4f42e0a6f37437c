package pgcache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// wrapResult is what one loader run produced, shared by the callers that
// waited for it.
type wrapResult struct {
	v       any     // the loader's value; nil when read from the store
	e       encoded // its encoding
	fromLdr bool
}

// Wrap returns the value of key if it is cached (decoded as in Get);
// otherwise it calls fn, stores its result with ttl (0: the cache's TTL) and
// returns it. ttl 0 is the cache's TTL, NoExpiry none. Concurrent calls for one key on this instance run fn once and
// share its result (and its error); with ClusterSingleFlight fn runs once
// across all instances: the others wait and read the stored value. A result
// that is not cacheable (nil, or encoding to JSON null, NocoBase's rule)
// returns an error wrapping ErrNotCacheable. fn's error is returned as it is
// and nothing is stored. fn runs with the context of the first caller.
func (c *Cache) Wrap(ctx context.Context, key string, fn func(ctx context.Context) (any, error), ttl time.Duration) (any, error) {
	r, err := c.wrap(ctx, key, ttl, fn)
	if err != nil {
		return nil, err
	}
	if r.fromLdr {
		return r.v, nil
	}
	return decodeAny(r.e.raw, r.e.kind)
}

// Wrap is the typed form of [Cache.Wrap]: a cached value is decoded into T.
func Wrap[T any](ctx context.Context, c *Cache, key string, fn func(ctx context.Context) (T, error), ttl time.Duration) (T, error) {
	var zero T
	r, err := c.wrap(ctx, key, ttl, func(ctx context.Context) (any, error) { return fn(ctx) })
	if err != nil {
		return zero, err
	}
	if r.fromLdr {
		if v, ok := r.v.(T); ok {
			return v, nil
		}
	}
	var v T
	if err := decodeInto(r.e.raw, r.e.kind, &v); err != nil {
		return zero, err
	}
	return v, nil
}

func (c *Cache) wrap(ctx context.Context, key string, ttl time.Duration, fn func(ctx context.Context) (any, error)) (wrapResult, error) {
	if err := c.check(ctx); err != nil {
		return wrapResult{}, err
	}
	if err := validateKey(key); err != nil {
		return wrapResult{}, err
	}
	if fn == nil {
		return wrapResult{}, errors.New("pgcache: wrap: nil loader")
	}
	e, ok, err := c.getEncoded(ctx, key)
	if err != nil {
		return wrapResult{}, err
	}
	if ok {
		return wrapResult{e: e}, nil
	}
	v, err, _ := c.sf.Do(key, func() (any, error) {
		if c.spec.clusterSF {
			return c.clusterLoad(ctx, key, ttl, fn)
		}
		// A flight that ended between this call's read and its Do has
		// stored the value: read again rather than run fn a second time.
		if e, ok, err := c.getEncoded(ctx, key); err != nil || ok {
			return wrapResult{e: e}, err
		}
		return c.load(ctx, key, ttl, fn)
	})
	if err != nil {
		return wrapResult{}, err
	}
	return v.(wrapResult), nil
}

// load runs fn and stores its result.
func (c *Cache) load(ctx context.Context, key string, ttl time.Duration, fn func(ctx context.Context) (any, error)) (wrapResult, error) {
	c.stats.loaderCalls.Add(1)
	v, err := fn(ctx)
	if err != nil {
		return wrapResult{}, err
	}
	e, err := c.encode(v)
	if err != nil {
		return wrapResult{}, opErr("wrap", key, err)
	}
	err = c.write(ctx, []string{key}, false, func(ctx context.Context, q querier) error { return c.st.set(ctx, q, key, e, c.ttlFor(ttl)) })
	if err != nil {
		return wrapResult{}, fmt.Errorf("pgcache: wrap %q: store: %w", key, err)
	}
	c.stats.sets.Add(1)
	return wrapResult{v: v, e: e, fromLdr: true}, nil
}

// clusterLoad runs the loader at most once across the cluster at a time:
// under a per-key session advisory lock held on the Manager's lock
// connection (never a pool connection, so the loader may use the pool). The
// holder re-reads the key, loads and stores the value, then unlocks; the
// others poll, with backoff, for the stored value or the lock.
func (c *Cache) clusterLoad(ctx context.Context, key string, ttl time.Duration, fn func(ctx context.Context) (any, error)) (wrapResult, error) {
	lockName := "pgcoord.pgcache.wrap:" + c.m.cfg.Schema + ":" + c.m.cfg.AppName + ":" + c.spec.prefix + ":" + key
	delay := wrapPollMin
	waited := false
	for {
		got, gen, err := c.m.wrapLocks.tryLock(ctx, lockName)
		if err != nil {
			return wrapResult{}, opErr("wrap", key, err)
		}
		if got {
			res, err := c.loadLocked(ctx, key, ttl, fn)
			if !c.m.wrapLocks.unlock(ctx, lockName, gen) {
				c.stats.clusterLocksLost.Add(1)
				c.logger.WarnContext(ctx, "pgcache: cluster single-flight lock lost while the loader ran (its connection ended); another instance may have loaded the key too",
					slog.String("key", key))
			}
			return res, err
		}
		if !waited {
			waited = true
			c.stats.clusterWaits.Add(1)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return wrapResult{}, ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, wrapPollMax)
		e, _, ok, err := c.pg.get(ctx, key)
		if err != nil {
			return wrapResult{}, opErr("wrap", key, err)
		}
		if ok {
			return wrapResult{e: e}, nil
		}
	}
}

// loadLocked runs under the cluster lock of key: the value may have been
// stored by the previous holder just before, so it is read again first.
func (c *Cache) loadLocked(ctx context.Context, key string, ttl time.Duration, fn func(ctx context.Context) (any, error)) (wrapResult, error) {
	e, _, ok, err := c.pg.get(ctx, key)
	if err != nil {
		return wrapResult{}, opErr("wrap", key, err)
	}
	if ok {
		return wrapResult{e: e}, nil
	}
	return c.load(ctx, key, ttl, fn)
}

// WrapOpts are the options of WrapWithCondition.
type WrapOpts struct {
	// TTL of a stored result: 0 the cache's TTL, NoExpiry none.
	TTL time.Duration
	// UseCache false calls fn and neither reads nor writes the cache. nil
	// means true.
	UseCache *bool
	// IsCacheable decides whether fn's result is stored. nil stores truthy
	// results only (JavaScript truthiness of the JSON value: not null,
	// false, 0 or ""; non-empty for []byte).
	IsCacheable func(v any) bool
}

// WrapWithCondition follows NocoBase's wrapWithCondition: unless
// UseCache is false it returns a cached value when that value is truthy
// (falsy cached values — 0, "", false — count as misses); otherwise it calls
// fn, stores the result when IsCacheable says so (by default: when it is
// truthy) and returns fn's result itself. There is no coalescing of
// concurrent calls.
func (c *Cache) WrapWithCondition(ctx context.Context, key string, fn func(ctx context.Context) (any, error), opts *WrapOpts) (any, error) {
	var o WrapOpts
	if opts != nil {
		o = *opts
	}
	if err := c.check(ctx); err != nil {
		return nil, err
	}
	if err := validateKey(key); err != nil {
		return nil, err
	}
	if fn == nil {
		return nil, errors.New("pgcache: wrap: nil loader")
	}
	if o.UseCache != nil && !*o.UseCache {
		return fn(ctx)
	}
	e, ok, err := c.getEncoded(ctx, key)
	if err != nil {
		return nil, err
	}
	if ok && truthy(e) {
		return decodeAny(e.raw, e.kind)
	}
	c.stats.loaderCalls.Add(1)
	v, err := fn(ctx)
	if err != nil {
		return nil, err
	}
	var cacheable bool
	if o.IsCacheable != nil {
		cacheable = o.IsCacheable(v)
	}
	enc, encErr := c.encode(v)
	if o.IsCacheable == nil {
		cacheable = encErr == nil && truthy(enc)
	}
	if !cacheable {
		return v, nil
	}
	if encErr != nil {
		return v, opErr("wrap", key, encErr)
	}
	if err := c.write(ctx, []string{key}, false, func(ctx context.Context, q querier) error {
		return c.st.set(ctx, q, key, enc, c.ttlFor(o.TTL))
	}); err != nil {
		return v, fmt.Errorf("pgcache: wrap %q: store: %w", key, err)
	}
	c.stats.sets.Add(1)
	return v, nil
}
