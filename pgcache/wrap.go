package pgcache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/pgcoord/pgcoord/internal/lockkey"
)

// wrapResult is what one loader run produced, shared by the callers that
// waited for it.
type wrapResult struct {
	v       any     // the loader's value; nil when read from the store
	e       encoded // its encoding; empty when null
	fromLdr bool
	null    bool // the loader's value is nil or encodes to null: not stored
}

// Wrap returns the value of key if it is cached; otherwise it calls fn,
// stores its result with ttl (0: the cache's TTL, NoExpiry: none) and
// returns it. Either way the value is returned as Get reads it back
// (decoded from JSON: objects as map[string]any, numbers as json.Number),
// so its shape never depends on whether it was cached; use the generic
// [Wrap] for a typed value.
//
// Concurrent calls for one key on this instance run fn once and share its
// result (and its error); with ClusterSingleFlight fn runs once across all
// instances: the others wait and read the stored value. fn runs with the
// context of the first caller. fn's error is returned as it is and nothing
// is stored. A nil result (or one that encodes to JSON null: "not found")
// is returned as nil with no error and is not stored, so fn runs again on
// the next call; for negative caching return a non-nil value that records
// the absence. A result that cannot be encoded returns an error wrapping
// ErrNotCacheable.
func (c *Cache) Wrap(ctx context.Context, key string, fn func(ctx context.Context) (any, error), ttl time.Duration) (any, error) {
	r, err := c.wrap(ctx, key, ttl, fn)
	if err != nil || r.null {
		return nil, err
	}
	return decodeAny(r.e.raw, r.e.kind)
}

// Wrap is the typed form of [Cache.Wrap]: a cached value is decoded into T,
// a loaded one is fn's value itself. A nil result of fn (a nil *T, map or
// slice) is returned with no error and not stored, as in Cache.Wrap.
func Wrap[T any](ctx context.Context, c *Cache, key string, fn func(ctx context.Context) (T, error), ttl time.Duration) (T, error) {
	var zero T
	if fn == nil {
		return zero, errNilLoader
	}
	r, err := c.wrap(ctx, key, ttl, func(ctx context.Context) (any, error) { return fn(ctx) })
	if err != nil {
		return zero, err
	}
	if r.fromLdr {
		if v, ok := r.v.(T); ok {
			return v, nil
		}
		if r.null {
			return zero, nil
		}
	}
	var v T
	if err := decodeInto(r.e.raw, r.e.kind, &v); err != nil {
		return zero, err
	}
	return v, nil
}

var errNilLoader = errors.New("pgcache: wrap: nil loader")

func (c *Cache) wrap(ctx context.Context, key string, ttl time.Duration, fn func(ctx context.Context) (any, error)) (wrapResult, error) {
	if err := c.checkKeys(ctx, key); err != nil {
		return wrapResult{}, err
	}
	if fn == nil {
		return wrapResult{}, errNilLoader
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
	v, err := runLoader(ctx, c, fn)
	if err != nil {
		return wrapResult{}, err
	}
	e, err := c.encode(v)
	if errors.Is(err, errNull) {
		return wrapResult{v: v, fromLdr: true, null: true}, nil
	}
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
	lockName := lockkey.Key(c.m.cfg.Schema, lockkey.CacheWrap, c.m.cfg.AppName, c.spec.prefix, key)
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
			c.stats.changed.Notify()
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

// WrapOpts are the options of WrapWithCondition. The zero value (or nil)
// reads and writes the cache with the cache's TTL and NocoBase's
// truthiness rule.
type WrapOpts struct {
	// TTL of a stored result: 0 the cache's TTL, NoExpiry none.
	TTL time.Duration
	// BypassCache calls fn and neither reads nor writes the cache
	// (NocoBase's useCache: false).
	BypassCache bool
	// IsCacheable decides which values count: fn's result is stored only if
	// IsCacheable accepts it, and a cached value is a hit only if
	// IsCacheable accepts it, so whatever it lets in is read back. nil
	// means NocoBase's rule: truthy values only, both ways (JavaScript
	// truthiness of the JSON value: not null, false, 0 or ""; non-empty for
	// []byte), so 0, "" and false are never cached. It is called with the
	// value the call would return: a T for the generic
	// [WrapWithCondition], the decoded value (as Get returns it) for
	// [Cache.WrapWithCondition].
	IsCacheable func(v any) bool
}

// WrapWithCondition follows NocoBase's wrapWithCondition: unless
// BypassCache, it returns a cached value when it counts (see
// WrapOpts.IsCacheable); otherwise it calls fn, stores the result when it
// counts and returns it. The value is returned as Get reads it back
// (decoded from JSON), whether it was cached, loaded or BypassCache was set;
// see the generic [WrapWithCondition] for a typed value. A nil result is
// returned as nil and not stored. There is no coalescing of concurrent calls.
func (c *Cache) WrapWithCondition(ctx context.Context, key string, fn func(ctx context.Context) (any, error), opts *WrapOpts) (any, error) {
	return wrapWithCondition(ctx, c, key, fn, opts, true)
}

// WrapWithCondition is the typed form of [Cache.WrapWithCondition]: a cached
// value is decoded into T, a loaded one is fn's value itself, and
// IsCacheable sees a T in both cases.
func WrapWithCondition[T any](ctx context.Context, c *Cache, key string, fn func(ctx context.Context) (T, error), opts *WrapOpts) (T, error) {
	return wrapWithCondition(ctx, c, key, fn, opts, false)
}

// wrapWithCondition implements both forms; normalize (the untyped form, T
// = any) returns a loaded value as it reads back from the store.
func wrapWithCondition[T any](ctx context.Context, c *Cache, key string, fn func(ctx context.Context) (T, error), opts *WrapOpts, normalize bool) (T, error) {
	var zero T
	var o WrapOpts
	if opts != nil {
		o = *opts
	}
	if err := c.checkKeys(ctx, key); err != nil {
		return zero, err
	}
	if fn == nil {
		return zero, errNilLoader
	}
	counts := func(v T, e encoded) bool {
		if o.IsCacheable != nil {
			return o.IsCacheable(v)
		}
		return truthy(e)
	}
	if !o.BypassCache {
		e, ok, err := c.getEncoded(ctx, key)
		if err != nil {
			return zero, err
		}
		if ok {
			var v T
			if err := decodeInto(e.raw, e.kind, &v); err != nil {
				return zero, opErr("wrap", key, err)
			}
			if counts(v, e) {
				return v, nil
			}
		}
	}
	c.stats.loaderCalls.Add(1)
	v, err := runLoader(ctx, c, fn)
	if err != nil {
		return zero, err
	}
	enc, encErr := c.encode(v)
	if errors.Is(encErr, errNull) {
		return zero, nil
	}
	if encErr != nil {
		// Not stored anyway: the typed form returns it as it is.
		if !normalize && (o.BypassCache || (o.IsCacheable != nil && !o.IsCacheable(v))) {
			return v, nil
		}
		return zero, opErr("wrap", key, encErr)
	}
	if normalize {
		v = zero
		if err := decodeInto(enc.raw, enc.kind, &v); err != nil {
			return zero, opErr("wrap", key, err)
		}
	}
	if o.BypassCache || !counts(v, enc) {
		return v, nil
	}
	if err := c.write(ctx, []string{key}, false, func(ctx context.Context, q querier) error {
		return c.st.set(ctx, q, key, enc, c.ttlFor(o.TTL))
	}); err != nil {
		return v, fmt.Errorf("pgcache: wrap %q: store: %w", key, err)
	}
	c.stats.sets.Add(1)
	return v, nil
}
