package pgcoordtest

import (
	"context"
	"testing"
	"time"
)

// DefaultTimeout bounds [Receive] and [WaitFor]. It is generous on purpose:
// it only decides how long a broken test takes to fail, never whether a
// working one passes.
const DefaultTimeout = 30 * time.Second

// Receive waits for a value on ch and returns it. It fails the test when
// DefaultTimeout passes first or ch is closed.
func Receive[T any](tb testing.TB, ch <-chan T) T {
	tb.Helper()
	timer := time.NewTimer(DefaultTimeout)
	defer timer.Stop()
	select {
	case v, ok := <-ch:
		if !ok {
			tb.Fatalf("pgcoordtest: Receive: channel closed")
		}
		return v
	case <-timer.C:
		tb.Fatalf("pgcoordtest: Receive: nothing arrived within %s", DefaultTimeout)
	}
	panic("unreachable")
}

// WaitFor calls cond until it returns true, failing the test when it returns
// an error or DefaultTimeout passes first; what names the condition in the
// failure. cond's ctx ends at the deadline. Calls are spaced from 5 ms up to
// 200 ms apart.
func WaitFor(tb testing.TB, what string, cond func(ctx context.Context) (bool, error)) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	pause := 5 * time.Millisecond
	for {
		ok, err := cond(ctx)
		if err != nil {
			tb.Fatalf("pgcoordtest: waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		timer := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			timer.Stop()
			tb.Fatalf("pgcoordtest: gave up waiting for %s after %s", what, DefaultTimeout)
		case <-timer.C:
		}
		pause = min(2*pause, 200*time.Millisecond)
	}
}
