package queue_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/queue"
)

func Example() {
	db, cleanup := pgtest.ExampleDB()
	defer cleanup()
	ctx := context.Background()

	q, err := queue.New(db.Pool, &queue.Config{AppName: "main"})
	if err != nil {
		panic(err)
	}
	done := make(chan struct{})
	err = q.Subscribe(ctx, "mail.send", queue.Consumer{
		Concurrency: 2,
		Process: func(ctx context.Context, msg queue.Message) error {
			var to string
			if err := json.Unmarshal(msg.Payload, &to); err != nil {
				return err
			}
			fmt.Printf("sending to %s (retried %d times)\n", to, msg.Retried)
			close(done)
			return nil
		},
	})
	if err != nil {
		panic(err)
	}
	if err := q.Start(ctx); err != nil {
		panic(err)
	}
	if _, err := q.Publish(ctx, "mail.send", "ada@example.com", &queue.PublishOpts{MaxRetries: 3, Timeout: 5 * time.Second}); err != nil {
		panic(err)
	}
	<-done
	if err := q.Stop(ctx); err != nil {
		panic(err)
	}
	// Output:
	// sending to ada@example.com (retried 0 times)
}
