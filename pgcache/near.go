package pgcache

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
)

// nearMessage is the invalidation payload published on a near cache's channel.
type nearMessage struct {
	Keys  []string `json:"keys,omitempty"`
	Reset bool     `json:"reset,omitempty"`
	// Origin is the near-registry id of the writing Manager when that
	// Manager already invalidated its own near caches after the commit;
	// they skip the message (it would only drop fresh entries).
	Origin string `json:"origin,omitempty"`
}

type nearEntry struct {
	e         encoded
	expiresAt int64 // Unix nanoseconds by this process's clock; 0: none
}

// nearCache is an in-process LRU in front of the postgres store.
//
// Staleness: a value read from PostgreSQL is stored only if no invalidation
// (of any key) happened since the read started: gen counts invalidations,
// and put compares it under mu. A reader that raced with a write therefore
// never caches the value it read before the write.
type nearCache struct {
	c   *Cache
	lru *otter.Cache[string, nearEntry]
	ttl time.Duration
	bus *listenBus
	reg *nearReg // the Manager's registration of the prefix

	mu       sync.RWMutex  // put holds it shared, invalidations exclusive
	gen      atomic.Uint64 // bumped, under mu, by every invalidation
	epoch    atomic.Int64  // the bus epoch the entries belong to; set under mu
	regEpoch atomic.Uint64 // the registration epoch they belong to; set under mu
}

func newNearCache(ctx context.Context, c *Cache) (*nearCache, error) {
	n := &nearCache{c: c, ttl: c.spec.nearTTL}
	n.lru = otter.Must(&otter.Options[string, nearEntry]{
		MaximumSize: c.spec.nearMax,
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, nearEntry]) time.Duration {
			if e.Value.expiresAt == 0 {
				return math.MaxInt64
			}
			return time.Duration(e.Value.expiresAt - time.Now().UnixNano())
		}),
	})
	bus, err := newListenBus(ctx, c.m, nearChannel(c.m.cfg.AppName, c.spec.prefix), n.receive, n.resync)
	if err != nil {
		n.lru.StopAllGoroutines()
		return nil, err
	}
	n.bus = bus
	n.epoch.Store(bus.epoch())
	// Registered after subscribing: every write that sees the registration
	// publishes, and the subscription is live already.
	reg, err := c.m.registerNear(ctx, n)
	if err != nil {
		bus.close()
		n.lru.StopAllGoroutines()
		return nil, err
	}
	n.reg = reg
	n.regEpoch.Store(reg.epoch.Load())
	return n, nil
}

// nearChannel is the pub/sub channel of a near cache's invalidations; caches
// sharing a prefix share entries, so they share the channel.
func nearChannel(app, prefix string) string { return "pgcache.near:" + app + ":" + prefix }

func (n *nearCache) close() {
	n.bus.close()
	n.flushLocal()
	n.lru.StopAllGoroutines()
}

// receive handles an invalidation from any instance.
func (n *nearCache) receive(msg nearMessage) {
	if msg.Origin != "" && msg.Origin == n.c.m.near.id {
		return
	}
	if msg.Reset {
		n.flushLocal()
		n.c.stats.nearCounted(0)
		return
	}
	n.invalidate(msg.Keys, false)
	if len(msg.Keys) > 0 {
		n.c.stats.nearCounted(uint64(len(msg.Keys)))
	}
}

// resync runs when the listener reconnected: invalidations may have been
// missed, so everything goes.
func (n *nearCache) resync() {
	n.flushLocal()
	n.c.stats.nearCounted(0)
	n.c.logger.Info("pgcache: near cache flushed after listener reconnect")
}

func (n *nearCache) flushLocal() {
	n.mu.Lock()
	n.gen.Add(1)
	n.lru.InvalidateAll()
	n.mu.Unlock()
}

func (n *nearCache) invalidate(keys []string, reset bool) {
	if reset {
		n.flushLocal()
		return
	}
	n.mu.Lock()
	n.gen.Add(1)
	for _, k := range keys {
		n.lru.Invalidate(k)
	}
	n.mu.Unlock()
}

// usable reports whether the near cache may serve and store entries: the
// listener is healthy, and when it reconnected since the entries were stored
// they are flushed first (invalidations may have been missed meanwhile;
// OnResync flushes too, but runs later, on the subscription's goroutine).
//
// Likewise while the Manager's registration of the prefix may have lapsed
// (writes without a near cache stop publishing for a prefix without one),
// and after it registered again.
func (n *nearCache) usable() bool {
	if !n.bus.healthy() || !n.reg.valid(n.c.m.mono()) {
		return false
	}
	ep, rep := n.bus.epoch(), n.reg.epoch.Load()
	if ep != n.epoch.Load() || rep != n.regEpoch.Load() {
		n.mu.Lock()
		if ep != n.epoch.Load() || rep != n.regEpoch.Load() {
			n.gen.Add(1)
			n.lru.InvalidateAll()
			n.epoch.Store(ep)
			n.regEpoch.Store(rep)
			n.c.stats.nearCounted(0)
		}
		n.mu.Unlock()
		return false
	}
	return true
}

// lookup returns a live entry; nothing is served while the listener is unhealthy.
func (n *nearCache) lookup(key string) (encoded, bool) {
	if !n.usable() {
		return encoded{}, false
	}
	ent, ok := n.lru.GetIfPresent(key)
	if !ok || (ent.expiresAt != 0 && ent.expiresAt <= time.Now().UnixNano()) {
		return encoded{}, false
	}
	return ent.e, true
}

// put stores a value read from PostgreSQL when no invalidation happened
// since gen was read and the listener is healthy. remaining is the entry's
// remaining lifetime by the database clock (noTTL: none).
func (n *nearCache) put(key string, e encoded, remaining time.Duration, gen uint64) {
	life := remaining
	if n.ttl > 0 && (life == noTTL || n.ttl < life) {
		life = n.ttl
	}
	var exp int64
	if life != noTTL {
		if life <= 0 {
			return
		}
		exp = time.Now().Add(life).UnixNano()
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.gen.Load() != gen || !n.bus.healthy() || n.bus.epoch() != n.epoch.Load() ||
		!n.reg.valid(n.c.m.mono()) || n.reg.epoch.Load() != n.regEpoch.Load() {
		return
	}
	n.lru.Set(key, nearEntry{e: e, expiresAt: exp})
}

func (n *nearCache) get(ctx context.Context, key string) (encoded, bool, error) {
	if e, ok := n.lookup(key); ok {
		n.c.stats.nearHits.Add(1)
		n.c.stats.hits.Add(1)
		return e, true, nil
	}
	n.c.stats.nearMisses.Add(1)
	gen := n.gen.Load()
	// gen is read before the read is queued, so before its statement starts.
	r := n.c.reads.get(ctx, key)
	if r.err != nil {
		return encoded{}, false, opErr("get", key, r.err)
	}
	n.c.count(r.ok)
	if r.ok {
		n.put(key, r.e, r.ttl, gen)
	}
	return r.e, r.ok, nil
}

func (n *nearCache) mget(ctx context.Context, keys []string) ([]encoded, []bool, error) {
	vals, found := make([]encoded, len(keys)), make([]bool, len(keys))
	var miss []string
	var missPos []int
	for i, k := range keys {
		if e, ok := n.lookup(k); ok {
			vals[i], found[i] = e, true
			n.c.stats.nearHits.Add(1)
			n.c.stats.hits.Add(1)
			continue
		}
		miss = append(miss, k)
		missPos = append(missPos, i)
	}
	if len(miss) == 0 {
		return vals, found, nil
	}
	n.c.stats.nearMisses.Add(uint64(len(miss)))
	gen := n.gen.Load()
	mv, mt, mf, err := n.c.pg.mgetTTL(ctx, miss)
	if err != nil {
		return nil, nil, fmt.Errorf("pgcache: mget: %w", err)
	}
	for j, i := range missPos {
		n.c.count(mf[j])
		if mf[j] {
			vals[i], found[i] = mv[j], true
			n.put(miss[j], mv[j], mt[j], gen)
		}
	}
	return vals, found, nil
}
