package listen

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/txhooks"
)

const testSyncDebounce = 50 * time.Millisecond

func syncOn(t *testing.T, ps *PubSub) *SyncMessages {
	t.Helper()
	sm, err := NewSyncMessages(ps, &SyncConfig{Debounce: testSyncDebounce})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, sm.Close(context.Background())) })
	return sm
}

func syncSubscribe(t *testing.T, sm *SyncMessages, channel string) *inbox {
	t.Helper()
	b := &inbox{}
	_, err := sm.Subscribe(context.Background(), channel, b.handle)
	require.NoError(t, err)
	return b
}

func TestSyncSkipSelfByDefault(t *testing.T) {
	ctx, db := setup(t)
	s1 := syncOn(t, started(t, db, "node1", nil))
	s2 := syncOn(t, started(t, db, "node2", nil))
	g1 := syncSubscribe(t, s1, "plugin")
	g2 := syncSubscribe(t, s2, "plugin")

	require.NoError(t, s2.Publish(ctx, "plugin", "message1", nil))
	msgs := g1.waitLen(t, 1)
	require.Equal(t, `"message1"`, string(msgs[0].Payload))
	require.Equal(t, "plugin", msgs[0].Channel)
	require.Equal(t, "node2", msgs[0].Sender)
	barrier(t, s1, g2, "plugin")
	require.Empty(t, g2.nonBarrier())

	// The second node sends another: the total is two, the last one message2.
	require.NoError(t, s1.Publish(ctx, "plugin", "message2", nil))
	g2.waitPayload(t, `"message2"`)
	barrier(t, s2, g1, "plugin")
	require.Equal(t, []string{`"message1"`}, g1.nonBarrier())
	require.Equal(t, []string{`"message2"`}, g2.nonBarrier())

	// The sync channel is "sync.<channel>" on the PubSub.
	raw := subscribe(t, s1.ps, "sync.plugin", nil)
	require.NoError(t, s2.Publish(ctx, "plugin", "message3", nil))
	raw.waitPayload(t, `"message3"`)
}

func TestSyncPublishTx(t *testing.T) {
	ctx, db := setup(t)
	s1 := syncOn(t, started(t, db, "node1", nil))
	s2 := syncOn(t, started(t, db, "node2", nil))
	g1 := syncSubscribe(t, s1, "plugin")

	tx, err := txhooks.Begin(ctx, s2.ps.pool)
	require.NoError(t, err)
	require.NoError(t, s2.PublishTx(ctx, tx, "plugin", "in-tx", nil))
	barrier(t, s2, g1, "plugin")
	require.Empty(t, g1.nonBarrier(), "delivered before commit")
	require.NoError(t, tx.Commit(ctx))
	g1.waitPayload(t, `"in-tx"`)

	tx, err = txhooks.Begin(ctx, s2.ps.pool)
	require.NoError(t, err)
	require.NoError(t, s2.PublishTx(ctx, tx, "plugin", "rolled-back", nil))
	require.NoError(t, tx.Rollback(ctx))
	require.NoError(t, s2.Publish(ctx, "plugin", "normal", nil))
	g1.waitPayload(t, `"normal"`)
	barrier(t, s2, g1, "plugin")
	require.Equal(t, []string{`"in-tx"`, `"normal"`}, g1.nonBarrier())
}

func TestSyncDebouncedByDefault(t *testing.T) {
	ctx, db := setup(t)
	s1 := syncOn(t, started(t, db, "node1", nil))
	s2 := syncOn(t, started(t, db, "node2", nil))
	g1 := syncSubscribe(t, s1, "plugin")
	// One transaction, so the burst reaches node1 at once however slow the
	// machine is (the debounce window is what is tested, not the publisher).
	tx, err := s2.ps.pool.Begin(ctx)
	require.NoError(t, err)
	for range 6 {
		require.NoError(t, s2.PublishTx(ctx, tx, "plugin", "reload", nil))
		require.NoError(t, s2.PublishTx(ctx, tx, "plugin", "other", nil))
	}
	require.NoError(t, tx.Commit(ctx))
	g1.waitLen(t, 2)
	barrier(t, s2, g1, "plugin")
	require.ElementsMatch(t, []string{`"reload"`, `"other"`}, g1.nonBarrier())

	sm, err := NewSyncMessages(s1.ps, nil)
	require.NoError(t, err)
	require.Equal(t, DefaultSyncDebounce, sm.debounce)
	require.NoError(t, sm.Close(ctx))
}

// TestSyncNotCalledAfterStop: a stopped node runs no sync handler, not even
// a debounced call that was pending when it stopped.
func TestSyncNotCalledAfterStop(t *testing.T) {
	ctx, db := setup(t)
	s1 := syncOn(t, started(t, db, "node1", nil))
	ps2 := started(t, db, "node2", nil)
	s2, err := NewSyncMessages(ps2, &SyncConfig{Debounce: time.Hour})
	require.NoError(t, err)
	var calls atomic.Int64
	_, err = s2.Subscribe(ctx, "plugin", func(context.Context, Message) error { calls.Add(1); return nil })
	require.NoError(t, err)
	witness := subscribe(t, ps2, "sync.plugin", nil)

	// Arrives at node2 and waits there for its debounce…
	require.NoError(t, s1.Publish(ctx, "plugin", "pending", nil))
	witness.waitLen(t, 1)
	// …when node2 stops.
	require.NoError(t, s2.Close(ctx))
	require.NoError(t, s2.Close(ctx))
	require.ErrorIs(t, s2.Publish(ctx, "plugin", "x", nil), ErrClosed)
	_, err = s2.Subscribe(ctx, "plugin", witness.handle)
	require.ErrorIs(t, err, ErrClosed)
	require.NoError(t, ps2.Close(ctx))

	// node1 keeps publishing; node2's handler never runs.
	g1 := syncSubscribe(t, s1, "plugin")
	ps3 := started(t, db, "node3", nil)
	s3 := syncOn(t, ps3)
	require.NoError(t, s1.Publish(ctx, "plugin", "after-stop", nil))
	barrier(t, s3, g1, "plugin")
	require.Zero(t, calls.Load())
}
