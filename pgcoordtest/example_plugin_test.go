package pgcoordtest_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/pgcoordtest"
)

// greeter is a user's plugin: it tells the other instances of the app to
// greet someone, as a NocoBase plugin would with a sync message.
type greeter struct {
	app.PluginBase
	greeted chan string
}

func (g *greeter) Name() string { return "greeter" }

func (g *greeter) HandleSyncMessage(_ context.Context, msg listen.Message) error {
	g.greeted <- string(msg.Payload)
	return nil
}

// TestGreeterAcrossInstances is how a user tests a plugin across two
// instances of their app: the sync message sent on instance 0 reaches the
// plugin on instance 1.
func TestGreeterAcrossInstances(t *testing.T) {
	t.Parallel()
	plugins := []*greeter{{greeted: make(chan string, 1)}, {greeted: make(chan string, 1)}}
	pgcoordtest.StartCluster(t, pgcoordtest.NewDB(t), 2, func(i int, cfg *app.Config) {
		cfg.Plugins = []app.Plugin{plugins[i]}
	})

	require.NoError(t, plugins[0].SendSyncMessage(context.Background(), "ada"))
	require.Equal(t, `"ada"`, pgcoordtest.Receive(t, plugins[1].greeted))
}
