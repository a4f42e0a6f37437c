package pgcache_test

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/pgcache"
)

// A near cache serves hot keys from memory; every write on any instance
// invalidates it through listen.
func ExampleCacheConfig_nearCache() {
	db, cleanup := pgtest.ExampleDB()
	defer cleanup()
	ctx := context.Background()

	ps, err := listen.New(db.Pool, &listen.Config{AppName: "main", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		panic(err)
	}
	if err := ps.Start(ctx); err != nil {
		panic(err)
	}
	defer ps.Close(ctx)
	m, err := pgcache.NewManager(db.Pool, &pgcache.ManagerConfig{AppName: "main", PubSub: ps})
	if err != nil {
		panic(err)
	}
	defer m.Close(ctx) // before the PubSub
	settings, err := m.CreateCache(ctx, pgcache.CacheConfig{Name: "settings", NearCache: true})
	if err != nil {
		panic(err)
	}

	_ = settings.Set(ctx, "theme", "dark", 0)
	for range 3 {
		theme, _, _ := pgcache.Get[string](ctx, settings, "theme")
		fmt.Println(theme)
	}
	_ = settings.Set(ctx, "theme", "light", 0) // read-your-writes on this instance
	theme, _, _ := pgcache.Get[string](ctx, settings, "theme")
	fmt.Println(theme)
	s := settings.Stats()
	fmt.Println("near hits:", s.NearHits, "near misses:", s.NearMisses)
	// Output:
	// dark
	// dark
	// dark
	// light
	// near hits: 2 near misses: 2
}
