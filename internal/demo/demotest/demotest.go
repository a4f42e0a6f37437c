// Package demotest starts clusters of the demo plugins (internal/demo) for
// their tests.
package demotest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/listen"
)

// Start creates n instances of the app name on db, instance i with id
// "inst-i", its own pool (application_name inst-i) and the plugin newPlugin
// returns for it, and starts them all at once (their Load's table setup is
// serialized by demoschema's advisory lock). Sync messages are debounced
// 10 ms. Every app is stopped at cleanup; a test that stopped one with a
// short deadline already saw that error.
func Start[P app.Plugin](t *testing.T, db *pgtest.DB, name string, n int, newPlugin func(id string) (P, error)) ([]*app.App, []P) {
	t.Helper()
	ctx := context.Background()
	apps := make([]*app.App, n)
	plugins := make([]P, n)
	for i := range n {
		id := fmt.Sprintf("inst-%d", i)
		p, err := newPlugin(id)
		require.NoError(t, err)
		a, err := app.New(ctx, app.Config{
			Name: name, Pool: db.NewPool(t, &pgtest.PoolOptions{AppName: id}), InstanceID: id,
			Plugins: []app.Plugin{p},
			Sync:    &listen.SyncConfig{Debounce: 10 * time.Millisecond},
		})
		require.NoError(t, err)
		t.Cleanup(func() {
			if err := a.Stop(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
				require.NoError(t, err)
			}
		})
		apps[i], plugins[i] = a, p
	}
	var g errgroup.Group
	for _, a := range apps {
		g.Go(func() error { return a.Start(ctx) })
	}
	require.NoError(t, g.Wait())
	return apps, plugins
}
