package pgcache

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
)

// DefaultMemoryMaxEntries bounds a memory-store cache when
// CacheConfig.MaxEntries is zero (NocoBase's default).
const DefaultMemoryMaxEntries = 2000

// memEntry is one value of the memory store. expiresAt is Unix nanoseconds,
// 0 for no expiry. Entries are immutable once stored.
type memEntry struct {
	e         encoded
	expiresAt int64
}

func (m memEntry) expired(now int64) bool { return m.expiresAt != 0 && m.expiresAt <= now }

// memStore is the memory store: a per-instance bounded LRU-like cache
// (otter's W-TinyLFU). Its read-modify-write operations (incr, object
// fields) run inside otter's Compute, atomic per key within the process.
type memStore struct {
	c         *otter.Cache[string, memEntry]
	evictions *atomic.Uint64
}

func newMemStore(maxEntries int, evictions *atomic.Uint64) *memStore {
	s := &memStore{evictions: evictions}
	s.c = otter.Must(&otter.Options[string, memEntry]{
		MaximumSize: maxEntries,
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, memEntry]) time.Duration {
			if e.Value.expiresAt == 0 {
				return math.MaxInt64
			}
			return time.Duration(e.Value.expiresAt - time.Now().UnixNano())
		}),
		OnAtomicDeletion: func(e otter.DeletionEvent[string, memEntry]) {
			if e.Cause == otter.CauseOverflow {
				evictions.Add(1)
			}
		},
	})
	return s
}

func (s *memStore) close() { s.c.StopAllGoroutines() }

func deadline(ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	return time.Now().Add(ttl).UnixNano()
}

func (s *memStore) lookup(key string) (memEntry, bool) {
	m, ok := s.c.GetIfPresent(key)
	if !ok || m.expired(time.Now().UnixNano()) {
		return memEntry{}, false
	}
	return m, true
}

func (s *memStore) get(_ context.Context, key string) (encoded, time.Duration, bool, error) {
	m, ok := s.lookup(key)
	return m.e, 0, ok, nil
}

func (s *memStore) mget(_ context.Context, keys []string) ([]encoded, []bool, error) {
	vals, found := make([]encoded, len(keys)), make([]bool, len(keys))
	for i, k := range keys {
		m, ok := s.lookup(k)
		vals[i], found[i] = m.e, ok
	}
	return vals, found, nil
}

func (s *memStore) set(_ context.Context, _ querier, key string, e encoded, ttl time.Duration) error {
	s.c.Set(key, memEntry{e: e, expiresAt: deadline(ttl)})
	return nil
}

func (s *memStore) mset(_ context.Context, _ querier, keys []string, vals []encoded, ttl time.Duration) error {
	exp := deadline(ttl)
	for i, k := range keys {
		s.c.Set(k, memEntry{e: vals[i], expiresAt: exp})
	}
	return nil
}

func (s *memStore) del(_ context.Context, _ querier, keys []string) error {
	for _, k := range keys {
		s.c.Invalidate(k)
	}
	return nil
}

func (s *memStore) reset(context.Context, querier) error {
	s.c.InvalidateAll()
	return nil
}

func (s *memStore) keys(_ context.Context, pattern string) ([]string, error) {
	now := time.Now().UnixNano()
	var out []string
	for k, m := range s.c.All() {
		if !m.expired(now) && globMatch(pattern, k) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (s *memStore) ttl(_ context.Context, key string) (time.Duration, error) {
	m, ok := s.lookup(key)
	switch {
	case !ok:
		return 0, fmt.Errorf("%w: %q", ErrNotFound, key)
	case m.expiresAt == 0:
		return NoExpiry, nil
	}
	return max(time.Duration(m.expiresAt-time.Now().UnixNano()), 0), nil
}

func (s *memStore) incrBy(_ context.Context, _ querier, key string, n int64, ttl time.Duration) (int64, error) {
	var (
		out int64
		err error
	)
	s.c.Compute(key, func(old memEntry, found bool) (memEntry, otter.ComputeOp) {
		if !found || old.expired(time.Now().UnixNano()) {
			out = n
			return memEntry{e: encoded{raw: strconv.AppendInt(nil, n, 10), kind: kindJSON}, expiresAt: deadline(ttl)}, otter.WriteOp
		}
		cur, perr := strconv.ParseInt(string(old.e.raw), 10, 64)
		if perr != nil || old.e.kind != kindJSON {
			err = fmt.Errorf("%w: %q", ErrNotInteger, key)
			return old, otter.CancelOp
		}
		if (n > 0 && cur > math.MaxInt64-n) || (n < 0 && cur < math.MinInt64-n) {
			err = fmt.Errorf("%w: %q: overflow", ErrNotInteger, key)
			return old, otter.CancelOp
		}
		out = cur + n
		return memEntry{e: encoded{raw: strconv.AppendInt(nil, out, 10), kind: kindJSON}, expiresAt: old.expiresAt}, otter.WriteOp
	})
	return out, err
}

// objUpdate applies fn to the stored object of key (an empty object when
// missing or expired) atomically and keeps the entry's expiry.
func (s *memStore) objUpdate(key string, create bool, ttl time.Duration, fn func(map[string]json.RawMessage)) error {
	var err error
	s.c.Compute(key, func(old memEntry, found bool) (memEntry, otter.ComputeOp) {
		obj := map[string]json.RawMessage{}
		exp := deadline(ttl)
		if found && !old.expired(time.Now().UnixNano()) {
			if old.e.kind != kindJSON || !bytes.HasPrefix(bytes.TrimSpace(old.e.raw), []byte("{")) {
				err = fmt.Errorf("%w: %q", ErrNotObject, key)
				return old, otter.CancelOp
			}
			if uerr := json.Unmarshal(old.e.raw, &obj); uerr != nil {
				err = fmt.Errorf("%w: %q: %w", ErrNotObject, key, uerr)
				return old, otter.CancelOp
			}
			exp = old.expiresAt
		} else if !create {
			return old, otter.CancelOp
		}
		fn(obj)
		raw, merr := json.Marshal(obj)
		if merr != nil {
			err = merr
			return old, otter.CancelOp
		}
		return memEntry{e: encoded{raw: raw, kind: kindJSON}, expiresAt: exp}, otter.WriteOp
	})
	return err
}

func (s *memStore) objSet(_ context.Context, _ querier, key, field string, e encoded, ttl time.Duration) error {
	if e.kind != kindJSON {
		return fmt.Errorf("%w: a field of an object must be JSON, not raw bytes", ErrNotCacheable)
	}
	return s.objUpdate(key, true, ttl, func(m map[string]json.RawMessage) { m[field] = e.raw })
}

func (s *memStore) objDel(_ context.Context, _ querier, key, field string) error {
	return s.objUpdate(key, false, 0, func(m map[string]json.RawMessage) { delete(m, field) })
}
