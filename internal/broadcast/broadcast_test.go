package broadcast_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/broadcast"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestNotifyClosesOnlyTheChannelsTakenBefore(t *testing.T) {
	t.Parallel()
	var s broadcast.Signal
	s.Notify() // no waiter: nothing to close, nothing kept
	a, b := s.Next(), s.Next()
	require.False(t, closed(a))
	s.Notify()
	require.True(t, closed(a), "a waiter taken before Notify is woken")
	require.True(t, closed(b), "every waiter is woken")
	c := s.Next()
	require.False(t, closed(c), "a channel taken after Notify waits for the next one")
	s.Notify()
	require.True(t, closed(c))
}

func TestConcurrentNotifyAndNext(t *testing.T) {
	t.Parallel()
	var s broadcast.Signal
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range 1000 {
				s.Notify()
			}
		}()
		go func() {
			defer wg.Done()
			for range 1000 {
				ch := s.Next()
				s.Notify()
				<-ch // closed by this or another goroutine's Notify, never twice
			}
		}()
	}
	wg.Wait()
}
