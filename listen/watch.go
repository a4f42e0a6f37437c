package listen

import "sync/atomic"

// watch wakes whoever waits for a PubSub's observable state to change:
// Healthy, a Stats counter, a handler or OnResync call having returned.
// Tests wait on it instead of polling. With no waiter a change costs an
// atomic swap.
type watch struct {
	ch atomic.Pointer[chan struct{}] // closed at the next change; nil: no waiter
}

// changed wakes the current waiters.
func (w *watch) changed() {
	if p := w.ch.Swap(nil); p != nil {
		close(*p)
	}
}

// next returns a channel closed at the next change. A waiter takes it before
// reading the state, so a change in between is not missed.
func (w *watch) next() <-chan struct{} {
	for {
		if p := w.ch.Load(); p != nil {
			return *p
		}
		ch := make(chan struct{})
		if w.ch.CompareAndSwap(nil, &ch) {
			return ch
		}
	}
}

// setHealthy sets Healthy.
func (ps *PubSub) setHealthy(v bool) {
	ps.healthy.Store(v)
	ps.watch.changed()
}

// count adds n to a Stats counter.
func (ps *PubSub) count(c *atomic.Int64, n int64) {
	c.Add(n)
	ps.watch.changed()
}
