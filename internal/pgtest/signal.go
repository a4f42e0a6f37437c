package pgtest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/broadcast"
)

// WaitUntil waits, without polling, until cond holds: it takes the channel
// changed returns, checks cond, and when cond is false waits for that
// channel to close before it checks again (a change between the check and
// the wait is not missed). It fails t when within passes first.
func WaitUntil(t testing.TB, within time.Duration, changed func() <-chan struct{}, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		next := changed()
		if cond() {
			return
		}
		select {
		case <-next:
		case <-deadline.C:
			require.FailNow(t, "condition not met", msgAndArgs...)
		}
	}
}

// Signal tells a waiting test that what it watches may have changed: the
// test calls Notify from a hook (a handler, OnSync, OnEvent, ...), and
// WaitUntil re-checks its condition at each notification. It is the
// library's [broadcast.Signal] with WaitUntil; the zero Signal is ready to
// use.
type Signal struct {
	broadcast.Signal
}

// WaitUntil is [WaitUntil] on s's notifications.
func (s *Signal) WaitUntil(t testing.TB, within time.Duration, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	WaitUntil(t, within, s.Next, cond, msgAndArgs...)
}

// Closed reports whether ch is closed (or has a value ready), without
// waiting.
func Closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
