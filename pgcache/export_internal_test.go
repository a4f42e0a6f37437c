package pgcache

import "context"

// LapseNearRegistrations makes this Manager's near-cache registrations look
// unrenewed for longer than their lease allows, as after 90 s of failed
// renewals: its near caches stop serving until a renewal succeeds.
func (m *Manager) LapseNearRegistrations() {
	m.near.mu.Lock()
	defer m.near.mu.Unlock()
	for _, r := range m.near.regs {
		r.validUntil.Store(0)
	}
}

// RenewNearRegistrations runs one renewal of every registration now, as the
// renewal loop does every 30 s.
func (m *Manager) RenewNearRegistrations(ctx context.Context) error {
	m.near.mu.Lock()
	regs := make([]*nearReg, 0, len(m.near.regs))
	for _, r := range m.near.regs {
		regs = append(regs, r)
	}
	m.near.mu.Unlock()
	for _, r := range regs {
		if err := m.renew(ctx, r); err != nil {
			return err
		}
	}
	return nil
}
