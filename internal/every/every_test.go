package every_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pgcoord/pgcoord/internal/every"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Run calls fn repeatedly, never concurrently, and returns once ctx ends,
// without a further call.
func TestRunCallsUntilCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	calls := make(chan struct{})
	returned := make(chan struct{})
	running := false
	go func() {
		defer close(returned)
		every.Run(ctx, time.Millisecond, func(ctx context.Context) {
			require.False(t, running, "calls overlap")
			running = true
			defer func() { running = false }()
			select {
			case calls <- struct{}{}:
			case <-ctx.Done():
			}
		})
	}()
	for range 3 {
		<-calls
	}
	cancel()
	<-returned
	select {
	case <-calls:
		t.Fatal("fn called after Run returned")
	default:
	}
}

// Run returns at once when ctx has already ended.
func TestRunEndedContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	every.Run(ctx, time.Hour, func(context.Context) { t.Fatal("fn called") })
}
