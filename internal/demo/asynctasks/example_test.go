package asynctasks_test

import (
	"context"
	"fmt"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/demo/asynctasks"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

func Example() {
	db, cleanup := pgtest.ExampleDB()
	defer cleanup()
	ctx := context.Background()

	done := make(chan asynctasks.Event, 1)
	tasks, err := asynctasks.New(asynctasks.Config{
		Concurrency: 2,
		Execute: func(ctx context.Context, t asynctasks.Task) (any, error) {
			return map[string]string{"report": "ready"}, nil
		},
		OnEvent: func(e asynctasks.Event) {
			if e.Kind != "started" {
				done <- e
			}
		},
	})
	if err != nil {
		panic(err)
	}
	a, err := app.New(ctx, app.Config{Name: "example", Pool: db.Pool, Plugins: []app.Plugin{tasks}})
	if err != nil {
		panic(err)
	}
	if err := a.Start(ctx); err != nil {
		panic(err)
	}
	defer a.Stop(ctx)

	id, err := tasks.CreateTask(ctx, "export", map[string]string{"format": "csv"})
	if err != nil {
		panic(err)
	}
	fmt.Println("task", (<-done).Kind)
	t, err := tasks.Task(ctx, id)
	if err != nil {
		panic(err)
	}
	fmt.Println(t.Status, string(t.Result))
	// Output:
	// task succeeded
	// SUCCEEDED {"report": "ready"}
}
