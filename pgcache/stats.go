package pgcache

import (
	"sync/atomic"

	"github.com/pgcoord/pgcoord/internal/broadcast"
)

// Stats are counters of one cache since it was created on this instance.
type Stats struct {
	// Hits and Misses count reads by key (Get, MGet per key, Wrap,
	// GetValueInObject); Hits include NearHits.
	Hits, Misses uint64
	// Sets counts stored values (MSet counts each key), Deletes deleted keys
	// (Del, MDel per key) and Resets calls of Reset.
	Sets, Deletes, Resets uint64
	// Evictions counts entries removed to respect MaxEntries: by this
	// instance's sweeper for the postgres store, by the LRU for the memory store.
	Evictions uint64
	// ExpiredSwept counts expired rows of this cache deleted by this
	// instance's sweeper.
	ExpiredSwept uint64
	// LoaderCalls counts the loader functions Wrap ran on this instance.
	LoaderCalls uint64
	// NearHits and NearMisses count near-cache lookups; NearInvalidations
	// counts keys dropped from the near cache because of a write on any
	// instance; NearFlushes counts whole flushes (Reset anywhere, listener
	// reconnects).
	NearHits, NearMisses, NearInvalidations, NearFlushes uint64
	// ClusterWaits counts ClusterSingleFlight Wraps that found the key being
	// loaded under another holder's lock and waited for it.
	ClusterWaits uint64
	// ClusterLocksLost counts ClusterSingleFlight loads whose lock ended with
	// its connection before the value was stored (logged at warning level):
	// another instance may have run its loader at the same time.
	ClusterLocksLost uint64
}

type stats struct {
	hits, misses, sets, deletes, resets, evictions, expiredSwept, loaderCalls atomic.Uint64
	nearHits, nearMisses, nearInvalidations, nearFlushes                      atomic.Uint64
	clusterWaits, clusterLocksLost                                            atomic.Uint64
	// changed fires after every count of nearInvalidations, nearFlushes
	// or clusterWaits (tests wait on it instead of polling).
	changed broadcast.Signal
}

// nearCounted counts n near invalidations (or a flush when n is 0).
func (s *stats) nearCounted(n uint64) {
	if n == 0 {
		s.nearFlushes.Add(1)
	} else {
		s.nearInvalidations.Add(n)
	}
	s.changed.Notify()
}

func (s *stats) snapshot() Stats {
	return Stats{
		Hits: s.hits.Load(), Misses: s.misses.Load(),
		Sets: s.sets.Load(), Deletes: s.deletes.Load(), Resets: s.resets.Load(),
		Evictions: s.evictions.Load(), ExpiredSwept: s.expiredSwept.Load(), LoaderCalls: s.loaderCalls.Load(),
		NearHits: s.nearHits.Load(), NearMisses: s.nearMisses.Load(),
		NearInvalidations: s.nearInvalidations.Load(), NearFlushes: s.nearFlushes.Load(),
		ClusterWaits: s.clusterWaits.Load(), ClusterLocksLost: s.clusterLocksLost.Load(),
	}
}

func (s Stats) add(o Stats) Stats {
	s.Hits += o.Hits
	s.Misses += o.Misses
	s.Sets += o.Sets
	s.Deletes += o.Deletes
	s.Resets += o.Resets
	s.Evictions += o.Evictions
	s.ExpiredSwept += o.ExpiredSwept
	s.LoaderCalls += o.LoaderCalls
	s.NearHits += o.NearHits
	s.NearMisses += o.NearMisses
	s.NearInvalidations += o.NearInvalidations
	s.NearFlushes += o.NearFlushes
	s.ClusterWaits += o.ClusterWaits
	s.ClusterLocksLost += o.ClusterLocksLost
	return s
}
