package pgcache

import (
	"bytes"
	"container/list"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
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

// memItem is an element of the recency list.
type memItem struct {
	key string
	val memEntry
}

// memStore is the memory store: a per-instance LRU bounded by maxEntries, as
// NocoBase's memory store (lru-cache). Every call holds mu for its whole
// work, eviction included, so the bound holds whenever a call returns and
// read-modify-write operations (incr, object fields, bloom bits) are atomic
// within the process. No operation locks two keys' worth of anything else,
// so nothing here can deadlock.
type memStore struct {
	max       int
	evictions *atomic.Uint64

	mu    sync.Mutex // guards items and order
	items map[string]*list.Element
	order *list.List // front: most recently used; values are *memItem
}

func newMemStore(maxEntries int, evictions *atomic.Uint64) *memStore {
	return &memStore{max: maxEntries, evictions: evictions, items: map[string]*list.Element{}, order: list.New()}
}

func deadline(ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	return time.Now().Add(ttl).UnixNano()
}

// getLocked returns the live entry of key and marks it used; an expired
// entry is removed. s.mu is held.
func (s *memStore) getLocked(key string, now int64) (memEntry, bool) {
	el, ok := s.items[key]
	if !ok {
		return memEntry{}, false
	}
	it := el.Value.(*memItem)
	if it.val.expired(now) {
		s.order.Remove(el)
		delete(s.items, key)
		return memEntry{}, false
	}
	s.order.MoveToFront(el)
	return it.val, true
}

// putLocked stores key as the most recently used entry and evicts the least
// recently used ones beyond the bound. s.mu is held.
func (s *memStore) putLocked(key string, m memEntry) {
	if el, ok := s.items[key]; ok {
		el.Value.(*memItem).val = m
		s.order.MoveToFront(el)
		return
	}
	s.items[key] = s.order.PushFront(&memItem{key: key, val: m})
	for s.order.Len() > s.max {
		el := s.order.Back()
		s.order.Remove(el)
		delete(s.items, el.Value.(*memItem).key)
		s.evictions.Add(1)
	}
}

func (s *memStore) deleteLocked(key string) {
	if el, ok := s.items[key]; ok {
		s.order.Remove(el)
		delete(s.items, key)
	}
}

// lookup returns the live entry of key and marks it used.
func (s *memStore) lookup(key string) (memEntry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.getLocked(key, time.Now().UnixNano())
}

// compute replaces the entry of key by fn's result atomically; found is
// false for a missing or expired entry. fn returns write false to leave the
// entry as it is.
func (s *memStore) compute(key string, fn func(old memEntry, found bool) (m memEntry, write bool)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, found := s.getLocked(key, time.Now().UnixNano())
	if m, write := fn(old, found); write {
		s.putLocked(key, m)
	}
}

func (s *memStore) get(_ context.Context, key string) (encoded, time.Duration, bool, error) {
	m, ok := s.lookup(key)
	return m.e, 0, ok, nil
}

func (s *memStore) mget(_ context.Context, keys []string) ([]encoded, []bool, error) {
	vals, found := make([]encoded, len(keys)), make([]bool, len(keys))
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now().UnixNano()
	for i, k := range keys {
		m, ok := s.getLocked(k, now)
		vals[i], found[i] = m.e, ok
	}
	return vals, found, nil
}

func (s *memStore) set(_ context.Context, _ querier, key string, e encoded, ttl time.Duration) error {
	m := memEntry{e: e, expiresAt: deadline(ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.putLocked(key, m)
	return nil
}

func (s *memStore) mset(_ context.Context, _ querier, keys []string, vals []encoded, ttl time.Duration) error {
	exp := deadline(ttl)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, k := range keys {
		s.putLocked(k, memEntry{e: vals[i], expiresAt: exp})
	}
	return nil
}

func (s *memStore) del(_ context.Context, _ querier, keys []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		s.deleteLocked(k)
	}
	return nil
}

func (s *memStore) reset(context.Context, querier) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.items)
	s.order.Init()
	return nil
}

func (s *memStore) keys(_ context.Context, pattern string) ([]string, error) {
	now := time.Now().UnixNano()
	var out []string
	s.mu.Lock()
	for k, el := range s.items {
		if !el.Value.(*memItem).val.expired(now) && globMatch(pattern, k) {
			out = append(out, k)
		}
	}
	s.mu.Unlock()
	slices.Sort(out)
	return out, nil
}

func (s *memStore) ttl(_ context.Context, key string) (time.Duration, bool, error) {
	s.mu.Lock()
	var (
		m  memEntry
		ok bool
	)
	if el, found := s.items[key]; found && !el.Value.(*memItem).val.expired(time.Now().UnixNano()) {
		m, ok = el.Value.(*memItem).val, true
	}
	s.mu.Unlock()
	switch {
	case !ok:
		return 0, false, nil
	case m.expiresAt == 0:
		return NoExpiry, true, nil
	}
	return max(time.Duration(m.expiresAt-time.Now().UnixNano()), 0), true, nil
}

func (s *memStore) incrBy(_ context.Context, _ querier, key string, n int64, ttl time.Duration) (int64, error) {
	var (
		out int64
		err error
	)
	s.compute(key, func(old memEntry, found bool) (memEntry, bool) {
		if !found {
			out = n
			return memEntry{e: encoded{raw: strconv.AppendInt(nil, n, 10), kind: kindJSON}, expiresAt: deadline(ttl)}, true
		}
		cur, perr := strconv.ParseInt(string(old.e.raw), 10, 64)
		if perr != nil || old.e.kind != kindJSON {
			err = ErrNotInteger // the caller names the key
			return old, false
		}
		if (n > 0 && cur > math.MaxInt64-n) || (n < 0 && cur < math.MinInt64-n) {
			err = fmt.Errorf("%w: overflow", ErrNotInteger)
			return old, false
		}
		out = cur + n
		return memEntry{e: encoded{raw: strconv.AppendInt(nil, out, 10), kind: kindJSON}, expiresAt: old.expiresAt}, true
	})
	return out, err
}

// objUpdate applies fn to the stored object of key (an empty object when
// missing or expired) atomically and keeps the entry's expiry.
func (s *memStore) objUpdate(key string, create bool, ttl time.Duration, fn func(map[string]json.RawMessage)) error {
	var err error
	s.compute(key, func(old memEntry, found bool) (memEntry, bool) {
		obj := map[string]json.RawMessage{}
		exp := deadline(ttl)
		if found {
			if old.e.kind != kindJSON || !bytes.HasPrefix(bytes.TrimSpace(old.e.raw), []byte("{")) {
				err = fmt.Errorf("%w: %q", ErrNotObject, key)
				return old, false
			}
			if uerr := json.Unmarshal(old.e.raw, &obj); uerr != nil {
				err = fmt.Errorf("%w: %q: %w", ErrNotObject, key, uerr)
				return old, false
			}
			exp = old.expiresAt
		} else if !create {
			return old, false
		}
		fn(obj)
		raw, merr := json.Marshal(obj)
		if merr != nil {
			err = merr
			return old, false
		}
		return memEntry{e: encoded{raw: raw, kind: kindJSON}, expiresAt: exp}, true
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
