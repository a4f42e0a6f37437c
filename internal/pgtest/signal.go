package pgtest

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Signal tells a waiting test that what it watches may have changed: the
// test calls Notify from a plugin's hook (OnSync, OnEvent, ...), and
// WaitUntil re-checks its condition at each notification, without polling.
// The zero Signal is ready to use.
type Signal struct {
	mu sync.Mutex
	ch chan struct{} // closed (and dropped) at the next Notify
}

// Notify wakes every waiter.
func (s *Signal) Notify() {
	s.mu.Lock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
	s.mu.Unlock()
}

func (s *Signal) next() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// WaitUntil waits until cond holds, checking it now and after each Notify;
// it fails t when within passes first.
func (s *Signal) WaitUntil(t testing.TB, within time.Duration, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		changed := s.next()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			require.FailNow(t, "condition not met", msgAndArgs...)
		}
	}
}
