package listen

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// waitErr waits for one error from ch, failing the test after waitFor.
func waitErr(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(waitFor):
		t.Fatalf("%s did not return", what)
		return nil
	}
}

// TestCloseFromHandler: a "shut down" message whose handler closes the
// PubSub, on the handler's goroutine with an unrelated context: Close stops
// everything else and returns; the handler then returns.
func TestCloseFromHandler(t *testing.T) {
	ctx, db := setup(t)
	pub := started(t, db, "inst-pub", nil)
	sub := instance(t, db, "inst-sub", nil)
	closed := make(chan error, 1)
	_, err := sub.Subscribe(ctx, "shutdown", func(context.Context, Message) error {
		closed <- sub.Close(context.Background())
		return nil
	}, nil)
	require.NoError(t, err)
	other := subscribe(t, sub, "other", nil)
	require.NoError(t, sub.Start(ctx))
	require.NoError(t, pub.Publish(ctx, "shutdown", "now", nil))
	require.NoError(t, waitErr(t, closed, "Close from a handler"))
	require.False(t, sub.Healthy())
	require.ErrorIs(t, sub.Publish(ctx, "other", 1, nil), ErrClosed)
	require.NoError(t, pub.Publish(ctx, "other", "late", nil))
	require.Zero(t, other.len())
}

// TestCloseFromHandlerOtherGoroutine: the handler hands its context to
// another goroutine that closes the PubSub (as app.Stop does) and waits for
// it.
func TestCloseFromHandlerOtherGoroutine(t *testing.T) {
	ctx, db := setup(t)
	pub := started(t, db, "inst-pub", nil)
	sub := instance(t, db, "inst-sub", nil)
	closed := make(chan error, 1)
	_, err := sub.Subscribe(ctx, "shutdown", func(hctx context.Context, _ Message) error {
		done := make(chan error, 1)
		go func() { done <- sub.Close(context.WithoutCancel(hctx)) }()
		closed <- <-done
		return nil
	}, nil)
	require.NoError(t, err)
	require.NoError(t, sub.Start(ctx))
	require.NoError(t, pub.Publish(ctx, "shutdown", "now", nil))
	require.NoError(t, waitErr(t, closed, "Close from a handler's context"))
}

// TestSyncCloseFromHandler: SyncMessages.Close from a sync handler returns.
func TestSyncCloseFromHandler(t *testing.T) {
	ctx, db := setup(t)
	s1 := syncOn(t, started(t, db, "node1", nil))
	ps2 := started(t, db, "node2", nil)
	s2, err := NewSyncMessages(ps2, &SyncConfig{Debounce: -1})
	require.NoError(t, err)
	closed := make(chan error, 1)
	_, err = s2.Subscribe(ctx, "plugin", func(context.Context, Message) error {
		closed <- s2.Close(context.Background())
		return nil
	})
	require.NoError(t, err)
	require.NoError(t, s1.Publish(ctx, "plugin", "reload", nil))
	require.NoError(t, waitErr(t, closed, "SyncMessages.Close from a handler"))
	require.ErrorIs(t, s2.Publish(ctx, "plugin", 1, nil), ErrClosed)
}

// TestSyncAndPubSubCloseEitherOrder: SyncMessages.Close and PubSub.Close
// may run in either order, with a sync handler running and before Start;
// both return, and both refuse work afterwards.
func TestSyncAndPubSubCloseEitherOrder(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	for _, order := range []string{"sync-first", "pubsub-first"} {
		for _, start := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/started=%v", order, start), func(t *testing.T) {
				t.Parallel()
				closeSyncAndPubSub(t, db, start, order == "sync-first")
			})
		}
	}
}

func closeSyncAndPubSub(t *testing.T, db *pgtest.DB, start, syncFirst bool) {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ps := instance(t, db, "inst-"+randomID(), nil)
	sm, err := NewSyncMessages(ps, &SyncConfig{Debounce: -1})
	require.NoError(t, err)
	entered := make(chan struct{})
	_, err = sm.Subscribe(ctx, "ch", func(hctx context.Context, _ Message) error {
		close(entered)
		<-hctx.Done() // runs until a Close cancels it
		return nil
	})
	require.NoError(t, err)
	if start {
		require.NoError(t, ps.Start(ctx))
		require.NoError(t, sm.Publish(ctx, "ch", 1, &PublishOpts{OnlySelf: true}))
		<-entered
	}
	closers := []func(context.Context) error{sm.Close, ps.Close}
	if !syncFirst {
		closers[0], closers[1] = closers[1], closers[0]
	}
	for _, c := range closers {
		require.NoError(t, c(ctx))
	}
	require.ErrorIs(t, sm.Publish(ctx, "ch", 2, nil), ErrClosed)
	_, err = sm.Subscribe(ctx, "ch", func(context.Context, Message) error { return nil })
	require.ErrorIs(t, err, ErrClosed)
	require.NoError(t, sm.Close(ctx))
	require.NoError(t, ps.Close(ctx))
}
