package app_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/listen"
)

// stopperPlugin stops its app when it receives a sync message ("shut down").
type stopperPlugin struct {
	app.PluginBase
	a       *app.App
	stopped chan error
}

func (p *stopperPlugin) Name() string { return "stopper" }
func (p *stopperPlugin) HandleSyncMessage(ctx context.Context, _ listen.Message) error {
	p.stopped <- p.a.Stop(ctx)
	return nil
}

// TestStopFromHandleSyncMessage: app.Stop called from a plugin's
// HandleSyncMessage (with its context) returns, and the app is stopped.
func TestStopFromHandleSyncMessage(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	target := &stopperPlugin{stopped: make(chan error, 1)}
	a := newApp(t, db.Pool, "stopper", "i1", target)
	target.a = a
	sender := &stopperPlugin{stopped: make(chan error, 1)}
	b := newApp(t, db.Pool, "stopper", "i2", sender)
	sender.a = b
	require.NoError(t, a.Start(ctx))
	require.NoError(t, b.Start(ctx))
	require.NoError(t, sender.SendSyncMessage(ctx, "shut down"))
	select {
	case err := <-target.stopped:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("app.Stop from HandleSyncMessage did not return")
	}
	require.ErrorIs(t, a.PubSub().Publish(ctx, "c", 1, nil), listen.ErrClosed)
}
