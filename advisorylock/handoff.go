package advisorylock

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Handoff across instances: the FIFO on the lease row (queries.acquire
// enqueues, queries.release designates, queries.leave dequeues) and the local
// side of a designation, which reaches this instance either from its own
// release (the releaser was next in line) or by a NOTIFY on its own channel.

// orphanTimeout bounds the statements that pass on a designation no local
// waiter took.
const orphanTimeout = 5 * time.Second

// dispatch handles one notification of the liveness session:
//
//	"*"                  every head waiter re-checks (a reconnect, Close)
//	"<hash>"             a release of the previous version, or one that freed a key wanted by it
//	"<hash>:0"           the key is free and this instance is first in line
//	"<hash>:<token>:<µs>" the lease of the key was designated to this instance
func (m *Manager) dispatch(payload string) {
	if payload == "*" {
		m.wakeAll()
		return
	}
	hs, rest, designation := strings.Cut(payload, ":")
	h, err := strconv.ParseUint(hs, 16, 64)
	if err != nil {
		return
	}
	ts, us, _ := strings.Cut(rest, ":")
	token, _ := strconv.ParseInt(ts, 10, 64)
	if !designation || token <= 0 {
		m.wakeHash(h)
		return
	}
	ttlUS, _ := strconv.ParseInt(us, 10, 64)
	m.mu.Lock()
	owner, key := m.ownerID, ""
	if qs := m.byHash[h]; len(qs) == 1 { // more than one: a hash collision; look the key up
		key = qs[0].key
	}
	m.mu.Unlock()
	if key != "" {
		// The send time of the statement that put this instance in the FIFO
		// precedes the grant: a conservative start for the local deadline.
		m.adopt(key, token, owner, time.Duration(ttlUS)*time.Microsecond, time.Time{}, false)
		return
	}
	m.passOn("", token, owner)
}

// adopt hands the lease of key (token, granted to identity owner with a
// lease of ttl; 0: no expiry) to the head waiter of this instance's queue for
// key. sent is the send time of a statement known to precede the grant;
// zero means the queue's enqSent. With no waiter to take it (the waiter gave
// up meanwhile) the lease is passed on.
func (m *Manager) adopt(key string, token int64, owner int32, ttl time.Duration, sent time.Time, self bool) {
	m.mu.Lock()
	q := m.queues[key]
	var w *waiter
	if q != nil && len(q.waiters) > 0 && !q.waiters[0].claimed && m.state == mgrStarted && m.live && m.ownerID == owner {
		w = q.waiters[0]
	}
	if w == nil {
		m.mu.Unlock()
		m.passOn(key, token, owner)
		return
	}
	if sent.IsZero() {
		sent = q.enqSent
	}
	q.enqSent = time.Time{} // the designation took this instance out of the FIFO
	// The lease as set by the release is ttl from the grant, after sent. When
	// too little of it is left by the local clock, or the head asks for
	// another lease, the head fits it first (one statement, see fit); until
	// then it has no local deadline, and nobody uses it.
	var l *Lock
	if sent.IsZero() || ttl != w.ttl || (ttl > 0 && time.Until(sent.Add(ttl)) < ttl/2) {
		l = newLock(m, key, token, owner, time.Time{}, 0)
		l.unfit = true
	} else {
		l = newLock(m, key, token, owner, sent, ttl)
	}
	m.held[l] = struct{}{}
	m.hot[key] = struct{}{} // designated: others may be queued behind (see Manager.hot)
	w.claimed = true
	m.mu.Unlock()
	m.acquired.Add(1)
	if self {
		m.handoffs.Add(1)
		m.log.Debug("lock handed over", slog.String("lock_key", key), slog.Int64("token", token), slog.String("owner", m.cfg.InstanceID))
	} else {
		m.designated.Add(1)
		m.log.Debug("lock designated to this instance", slog.String("lock_key", key), slog.Int64("token", token), slog.String("owner", m.cfg.InstanceID))
	}
	w.handoff <- l // capacity 1, and a waiter is claimed by one designation at a time
}

// fit makes a designated lock's lease what its new holder asked for (ttl;
// 0: no expiry) when adopt could not take it as is, and reports whether the
// lock is held. A lock that cannot be fitted is given back.
func (m *Manager) fit(ctx context.Context, l *Lock, ttl time.Duration) bool {
	if !l.held() {
		return false
	}
	if !l.unfit {
		return true
	}
	sent := time.Now()
	err := m.extend(context.WithoutCancel(ctx), l, ttl)
	if err == nil {
		l.mu.Lock()
		if l.state == stateHeld {
			l.setDeadlineLocked(sent, ttl)
			l.mu.Unlock()
			return true
		}
		l.mu.Unlock()
	}
	if !errors.Is(err, ErrNotHeld) {
		_ = m.releaseRow(context.WithoutCancel(ctx), l)
	}
	l.lose(causeNotHeld)
	return false
}

// passOn releases a lease designated to this instance that no local waiter
// took, so that it goes to the next instance in line. key "" means unknown
// (only the hash was notified): it is looked up by token. It runs in its own
// goroutine: the liveness session must not wait for a statement.
func (m *Manager) passOn(key string, token int64, owner int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state != mgrStarted || m.ownerID != owner {
		return // the identity ends with its session (or has): its leases are void, entries skipped
	}
	// Under m.mu with the Manager started: Close sets mgrClosed under m.mu
	// before it waits for wg, so this Add precedes that Wait.
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), orphanTimeout)
		defer cancel()
		if key == "" {
			err := m.pool.QueryRow(ctx, m.q.keyOfToken, m.cfg.AppName, token, owner).Scan(&key)
			if err != nil {
				if !errors.Is(err, pgx.ErrNoRows) {
					m.log.Warn("designated lease: key lookup failed; it ends at its TTL or with this session", slog.Int64("token", token), slog.Any("error", err))
				}
				return
			}
		}
		l := newLock(m, key, token, owner, time.Time{}, 0) // never registered: only its release is used
		if err := m.release(ctx, l); err != nil {
			m.log.Warn("designated lease with no waiter: release failed; it ends at its TTL or with this session",
				slog.String("lock_key", key), slog.Int64("token", token), slog.Any("error", err))
		}
	}()
}

// leave takes this instance out of key's FIFO after its last local waiter
// gave up, and wakes the next instance in line when the key is free.
func (m *Manager) leave(key string) {
	m.mu.Lock()
	owner, st := m.ownerID, m.state
	m.mu.Unlock()
	if st != mgrStarted {
		return // Close: the identity ends with the session; dead entries are skipped
	}
	ctx, cancel := context.WithTimeout(context.Background(), orphanTimeout)
	defer cancel()
	var notified int64
	err := m.pool.QueryRow(ctx, m.q.leave, m.cfg.AppName, key, owner, m.class, m.channel, m.payload(key)).Scan(&notified)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		m.log.Warn("lock wait: leaving the key's queue failed; the entry is skipped or passed on later", slog.String("lock_key", key), slog.Any("error", err))
	}
}
