package pgcache_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/pgcache"
)

// benchValue is the value internal/bench's cache rows store (about 100
// bytes of JSON).
type benchValue struct {
	ID    int      `json:"id"`
	Name  string   `json:"name"`
	Email string   `json:"email"`
	Roles []string `json:"roles"`
}

// benchCache is a postgres-store cache holding keys user:0..user:999.
func benchCache(b *testing.B) (*pgcache.Cache, []string) {
	db := pgtest.NewDB(b)
	c := newCache(b, newManager(b, db.Pool, &pgcache.ManagerConfig{AppName: "bench"}), pgcache.CacheConfig{Name: "bench"})
	keys, items := make([]string, 1000), make([]pgcache.Item, 1000)
	for i := range keys {
		keys[i] = "user:" + strconv.Itoa(i)
		items[i] = pgcache.Item{Key: keys[i], Value: benchValue{ID: i, Name: "user " + strconv.Itoa(i), Email: "u" + strconv.Itoa(i) + "@example.com", Roles: []string{"admin", "member"}}}
	}
	require.NoError(b, c.MSet(context.Background(), items, 0))
	_, err := db.Pool.Exec(context.Background(), `ANALYZE pgcoord.cache_entries`)
	require.NoError(b, err)
	return c, keys
}

// BenchmarkMGet100 is a typed MGet of 100 keys (allocations are the
// load-independent figure: go test -bench MGet100 -benchmem).
func BenchmarkMGet100(b *testing.B) {
	c, keys := benchCache(b)
	ctx := context.Background()
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		lo := (i * 100) % 900
		i++
		if _, err := pgcache.MGet[benchValue](ctx, c, keys[lo:lo+100]...); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetParallel is typed Gets from GOMAXPROCS*16 goroutines.
func BenchmarkGetParallel(b *testing.B) {
	c, keys := benchCache(b)
	ctx := context.Background()
	b.SetParallelism(16)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			if _, _, err := pgcache.Get[benchValue](ctx, c, keys[i%1000]); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
