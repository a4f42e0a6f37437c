package broadcast_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/broadcast"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

func TestNotifyClosesOnlyTheChannelsTakenBefore(t *testing.T) {
	t.Parallel()
	var s broadcast.Signal
	s.Notify() // no waiter: nothing to close, nothing kept
	a, b := s.Next(), s.Next()
	require.False(t, pgtest.Closed(a))
	s.Notify()
	require.True(t, pgtest.Closed(a), "a waiter taken before Notify is woken")
	require.True(t, pgtest.Closed(b), "every waiter is woken")
	c := s.Next()
	require.False(t, pgtest.Closed(c), "a channel taken after Notify waits for the next one")
	s.Notify()
	require.True(t, pgtest.Closed(c))
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
