package authcache_test

import (
	"context"
	"fmt"
	"time"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/demo/authcache"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

func Example() {
	db, cleanup := pgtest.ExampleDB()
	defer cleanup()
	ctx := context.Background()

	auth, err := authcache.New("") // tables in "public"
	if err != nil {
		panic(err)
	}
	a, err := app.New(ctx, app.Config{Name: "example", Pool: db.Pool, Plugins: []app.Plugin{auth}})
	if err != nil {
		panic(err)
	}
	if err := a.Start(ctx); err != nil {
		panic(err)
	}
	defer a.Stop(ctx)

	if err := auth.UpdatePolicy(ctx, authcache.TokenPolicy{TokenExpiry: 24 * time.Hour, RenewWindow: time.Hour}); err != nil {
		panic(err)
	}
	for range 2 {
		p, loaded, err := auth.Policy(ctx)
		if err != nil {
			panic(err)
		}
		fmt.Printf("tokens expire after %s (loaded from the table: %t)\n", p.TokenExpiry, loaded)
	}
	// Output:
	// tokens expire after 24h0m0s (loaded from the table: true)
	// tokens expire after 24h0m0s (loaded from the table: false)
}
