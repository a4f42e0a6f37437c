package schemasync_test

import (
	"context"
	"fmt"
	"time"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/demo/schemasync"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/listen"
)

// Two instances of one app: a collection saved on the first is reloaded by
// the second when the sync message sent in the same transaction arrives.
func Example() {
	db, cleanup := pgtest.ExampleDB()
	defer cleanup()
	ctx := context.Background()

	reloaded := make(chan schemasync.Reload, 1)
	var plugins []*schemasync.Plugin
	for _, id := range []string{"node-1", "node-2"} {
		p, err := schemasync.New("")
		if err != nil {
			panic(err)
		}
		if id == "node-2" {
			p.OnReload = func(r schemasync.Reload) { reloaded <- r }
		}
		a, err := app.New(ctx, app.Config{
			Name: "example", Pool: db.Pool, InstanceID: id, Plugins: []app.Plugin{p},
			Sync: &listen.SyncConfig{Debounce: 10 * time.Millisecond},
		})
		if err != nil {
			panic(err)
		}
		if err := a.Start(ctx); err != nil {
			panic(err)
		}
		defer a.Stop(ctx)
		plugins = append(plugins, p)
	}

	err := plugins[0].SaveCollection(ctx, schemasync.Collection{Name: "posts", Fields: []string{"id", "title"}})
	if err != nil {
		panic(err)
	}
	r := <-reloaded
	c, _ := plugins[1].Collection("posts")
	fmt.Printf("node-2 reloaded %s (sent by %s): fields %v\n", r.Collection, r.Sender, c.Fields)
	// Output:
	// node-2 reloaded posts (sent by node-1): fields [id title]
}
