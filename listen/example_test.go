package listen_test

import (
	"context"
	"fmt"
	"time"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/listen"
)

// Two instances of one app: b subscribes, a publishes.
func Example() {
	db, cleanup := pgtest.ExampleDB()
	defer cleanup()
	ctx := context.Background()

	a, _ := listen.New(db.Pool, &listen.Config{AppName: "shop", InstanceID: "a"})
	b, _ := listen.New(db.Pool, &listen.Config{AppName: "shop", InstanceID: "b"})
	defer a.Close(ctx)
	defer b.Close(ctx)

	got := make(chan listen.Message, 1)
	_, _ = b.Subscribe(ctx, "orders", func(ctx context.Context, msg listen.Message) error {
		got <- msg
		return nil
	}, nil)
	_ = a.Start(ctx)
	_ = b.Start(ctx)

	if err := a.Publish(ctx, "orders", map[string]any{"id": 42, "state": "paid"}, nil); err != nil {
		fmt.Println(err)
		return
	}
	select {
	case msg := <-got:
		fmt.Printf("%s from %s: %s\n", msg.Channel, msg.Sender, msg.Payload)
	case <-time.After(10 * time.Second):
		fmt.Println("timeout")
	}
	// Output: orders from a: {"id":42,"state":"paid"}
}

// Sync messages tell the other instances to reload some state.
func ExampleSyncMessages() {
	db, cleanup := pgtest.ExampleDB()
	defer cleanup()
	ctx := context.Background()

	a, _ := listen.New(db.Pool, &listen.Config{InstanceID: "a"})
	b, _ := listen.New(db.Pool, &listen.Config{InstanceID: "b"})
	defer a.Close(ctx)
	defer b.Close(ctx)
	_ = a.Start(ctx)
	_ = b.Start(ctx)
	syncA, _ := listen.NewSyncMessages(a, &listen.SyncConfig{Debounce: 10 * time.Millisecond})
	syncB, _ := listen.NewSyncMessages(b, &listen.SyncConfig{Debounce: 10 * time.Millisecond})
	defer syncA.Close(ctx)
	defer syncB.Close(ctx)

	reload := make(chan string, 1)
	_, _ = syncB.Subscribe(ctx, "acl", func(ctx context.Context, msg listen.Message) error {
		reload <- string(msg.Payload)
		return nil
	})
	_ = syncA.Publish(ctx, "acl", map[string]string{"type": "roles-changed"}, nil)
	select {
	case p := <-reload:
		fmt.Println("reload:", p)
	case <-time.After(10 * time.Second):
		fmt.Println("timeout")
	}
	// Output: reload: {"type":"roles-changed"}
}
