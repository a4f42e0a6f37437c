// Package broadcast is the "something changed" signal of pgcoord: a
// component calls Notify after each change of what it exposes (a counter,
// a health flag, a sweep), and whoever waits for that state takes Next
// before reading it and waits for the channel to close, so a change between
// the read and the wait is not missed. Tests wait on it instead of polling
// (internal/pgtest.WaitUntil).
package broadcast

import "sync/atomic"

// Signal wakes every waiter at the next Notify. The zero Signal is ready to
// use; with no waiter Notify costs one atomic load.
type Signal struct {
	ch atomic.Pointer[chan struct{}] // closed at the next Notify; nil: no waiter
}

// Notify wakes the current waiters: it closes the channel Next handed out
// since the last Notify, if any.
func (s *Signal) Notify() {
	if s.ch.Load() == nil {
		return
	}
	if p := s.ch.Swap(nil); p != nil {
		close(*p)
	}
}

// Next returns a channel that the next Notify closes. Take it before reading
// the watched state.
func (s *Signal) Next() <-chan struct{} {
	for {
		if p := s.ch.Load(); p != nil {
			return *p
		}
		ch := make(chan struct{})
		if s.ch.CompareAndSwap(nil, &ch) {
			return ch
		}
	}
}
