package pgcache_test

import (
	"context"
	"fmt"
	"time"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/pgcache"
)

func Example() {
	db, cleanup := pgtest.ExampleDB()
	defer cleanup()
	ctx := context.Background()

	m, err := pgcache.NewManager(db.Pool, &pgcache.ManagerConfig{AppName: "main"})
	if err != nil {
		panic(err)
	}
	defer m.Close(ctx)
	users, err := m.CreateCache(ctx, pgcache.CacheConfig{Name: "users", TTL: time.Hour})
	if err != nil {
		panic(err)
	}

	type user struct{ Name string }
	_ = users.Set(ctx, "1", user{Name: "ann"}, 0)
	u, ok, _ := pgcache.Get[user](ctx, users, "1")
	fmt.Println(u.Name, ok, users.Key("1"))

	// Wrap loads once, then serves the stored value.
	for range 2 {
		n, _ := pgcache.Wrap(ctx, users, "count", func(context.Context) (int, error) {
			fmt.Println("loading")
			return 42, nil
		}, 0)
		fmt.Println(n)
	}

	hits := users.Counter()
	_, _ = hits.Incr(ctx, "visits")
	v, _ := hits.IncrBy(ctx, "visits", 2)
	fmt.Println(v)
	// Output:
	// ann true main:users:1
	// loading
	// 42
	// 42
	// 3
}
