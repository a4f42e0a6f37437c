package fielddestroy_test

import (
	"context"
	"fmt"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/demo/fielddestroy"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

func Example() {
	db, cleanup := pgtest.ExampleDB()
	defer cleanup()
	ctx := context.Background()

	fields, err := fielddestroy.New("")
	if err != nil {
		panic(err)
	}
	a, err := app.New(ctx, app.Config{Name: "example", Pool: db.Pool, Plugins: []app.Plugin{fields}})
	if err != nil {
		panic(err)
	}
	if err := a.Start(ctx); err != nil {
		panic(err)
	}
	defer a.Stop(ctx)

	if err := fields.AddFields(ctx, "posts", "title", "body", "legacy_id"); err != nil {
		panic(err)
	}
	removed, err := fields.RemoveField(ctx, "posts", "legacy_id") // under the cluster lock
	if err != nil {
		panic(err)
	}
	version, _ := fields.Version(ctx, "posts")
	fmt.Println(removed, fields.Fields("posts"), "version", version)
	// Output:
	// true [body title] version 1
}
