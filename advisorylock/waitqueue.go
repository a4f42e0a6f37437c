package advisorylock

import (
	"context"
	"time"
)

// waitQueue holds this instance's waiters for one key in FIFO order. Only
// the head polls the database; the others wait for it to leave. The queue
// is guarded by Manager.mu.
type waitQueue struct {
	key     string
	hash    uint64
	waiters []*waiter
	// enqSent is the send time of the earliest statement since the last
	// grant that may have put this instance in the key's FIFO (zero: none):
	// a designation happens after it, so it is a conservative start for the
	// designated lease's local deadline.
	enqSent time.Time
}

type waiter struct {
	wake    chan struct{} // capacity 1: a pending wake-up is never lost nor blocks the sender
	ttl     time.Duration // the lease the waiter asks for (0: reservation)
	handoff chan *Lock    // capacity 1: a designated lease (see Manager.adopt)

	// guarded by Manager.mu
	claimed bool // a designation was handed to it; one value is on handoff
}

func (w *waiter) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (q *waitQueue) wakeHead() {
	if len(q.waiters) > 0 {
		q.waiters[0].signal()
	}
}

// enqueue appends a waiter for key asking for a lease of ttl.
func (m *Manager) enqueue(key string, ttl time.Duration) (*waiter, *waitQueue) {
	w := &waiter{wake: make(chan struct{}, 1), ttl: ttl, handoff: make(chan *Lock, 1)}
	m.mu.Lock()
	defer m.mu.Unlock()
	q := m.queues[key]
	if q == nil {
		q = &waitQueue{key: key, hash: keyHash(m.cfg.AppName, key)}
		m.queues[key] = q
		m.byHash[q.hash] = append(m.byHash[q.hash], q)
	}
	q.waiters = append(q.waiters, w)
	return w, q
}

// isHead reports whether w is first in q.
func (m *Manager) isHead(q *waitQueue, w *waiter) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(q.waiters) > 0 && q.waiters[0] == w
}

// dequeue removes w. When w leaves without the lock, the next waiter becomes
// head and is woken to poll; when w got the lock l, the next one is woken by
// l's release or loss (Manager.forget) instead, or now if that already
// happened (finish changes l's state before it calls forget, which needs
// m.mu, so one of the two wakes the new head).
//
// When the last waiter leaves without the lock, this instance leaves the
// key's FIFO (Manager.leave).
func (m *Manager) dequeue(q *waitQueue, w *waiter, l *Lock) {
	m.mu.Lock()
	claimed := w.claimed
	enqueued := !q.enqSent.IsZero()
	last := m.dequeueLocked(q, w, l)
	m.mu.Unlock()
	if claimed {
		// w leaves (ctx ended) while a designated lease was handed to it:
		// give it back, which passes it to the next waiter or instance.
		if nl := <-w.handoff; nl != nil {
			_ = nl.Release(context.Background())
		}
	}
	if last && l == nil && enqueued {
		m.leave(q.key)
	}
}

// dequeueLocked removes w from q and reports whether q is now empty (and gone).
func (m *Manager) dequeueLocked(q *waitQueue, w *waiter, l *Lock) bool {
	wasHead := len(q.waiters) > 0 && q.waiters[0] == w
	for i, x := range q.waiters {
		if x == w {
			q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
			break
		}
	}
	if len(q.waiters) == 0 {
		delete(m.queues, q.key)
		list := m.byHash[q.hash]
		for i, x := range list {
			if x == q {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(m.byHash, q.hash)
		} else {
			m.byHash[q.hash] = list
		}
		return true
	}
	if wasHead && (l == nil || !l.held()) {
		q.waiters[0].signal()
	}
	return false
}

// wakeHash wakes the head waiter of every queue whose key hashes to h.
func (m *Manager) wakeHash(h uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, q := range m.byHash[h] {
		q.wakeHead()
	}
}

// wakeAll wakes the head waiter of every queue.
func (m *Manager) wakeAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, q := range m.queues {
		q.wakeHead()
	}
}
