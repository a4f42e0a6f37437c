package pgcache

import "context"

// StatsChanged returns a channel closed at the next near invalidation, near
// flush or cluster wait this cache counts (Stats.NearInvalidations,
// Stats.NearFlushes, Stats.ClusterWaits).
func (c *Cache) StatsChanged() <-chan struct{} { return c.stats.changed.Next() }

// SweptChanged returns a channel closed after the next committed sweep batch
// of this Manager that deleted expired rows.
func (m *Manager) SweptChanged() <-chan struct{} { return m.swept.Next() }

// LapseNearRegistrations makes this Manager's near-cache registrations look
// unrenewed for longer than their lease allows, as after 90 s of failed
// renewals: its near caches stop serving until a renewal succeeds.
func (m *Manager) LapseNearRegistrations() {
	for _, r := range m.nearRegs() {
		r.validUntil.Store(0)
	}
}

// RenewNearRegistrations runs one renewal of every registration now, as the
// renewal loop does every 30 s.
func (m *Manager) RenewNearRegistrations(ctx context.Context) error {
	for _, r := range m.nearRegs() {
		if err := m.renew(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// SetReadHooks sets the lanes and test hooks of c's read coalescing
// (postgres store; before any Get): onRead runs before each read statement
// with its keys, onQueued after a Get queued for the next batch, with the
// number waiting.
func (c *Cache) SetReadHooks(lanes int, onRead func(keys []string), onQueued func(pending int)) {
	c.reads.lanes, c.reads.testHookRead, c.reads.testHookQueued = lanes, onRead, onQueued
}

// ReadStatements is the number of read statements c's Gets ran.
func (c *Cache) ReadStatements() uint64 { return c.reads.statements.Load() }
