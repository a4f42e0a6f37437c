package pgcache_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/pgcache"
)

// readGate holds a cache's read statements on the test's signal: reads
// receives each statement's keys, then the statement waits for the step
// of the same number (1-based) to be released, when there is one. The
// cache reads on lanes lanes (lanes reads in flight before Gets queue).
type readGate struct {
	reads  chan []string
	queued chan int
	steps  map[int]chan struct{}
	run    map[int]func()
	mu     sync.Mutex
	n      int
}

func gateReads(c *pgcache.Cache, lanes int, steps ...int) *readGate {
	g := &readGate{reads: make(chan []string, 100), queued: make(chan int, 100), steps: map[int]chan struct{}{}, run: map[int]func(){}}
	for _, s := range steps {
		g.steps[s] = make(chan struct{})
	}
	c.SetReadHooks(lanes, func(keys []string) {
		g.mu.Lock()
		g.n++
		step, fn := g.steps[g.n], g.run[g.n]
		g.mu.Unlock()
		if fn != nil {
			fn()
		}
		g.reads <- keys
		if step != nil {
			<-step
		}
	}, func(pending int) { g.queued <- pending })
	return g
}

// onRead runs fn before read statement n (before it is reported on reads).
func (g *readGate) onRead(n int, fn func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.run[n] = fn
}

func (g *readGate) release(step int) { close(g.steps[step]) }

// waitQueued waits until n Gets wait for the next batch.
func (g *readGate) waitQueued(t *testing.T, n int) {
	t.Helper()
	for receive(t, g.queued, fmt.Sprintf("%d queued Gets", n)) < n {
	}
}

type getResult struct {
	key, val string
	ok       bool
	err      error
}

// getAsync runs Get(key) on a goroutine of its own; the result arrives on out.
func getAsync(ctx context.Context, c *pgcache.Cache, key string, out chan<- getResult) {
	go func() {
		v, ok, err := pgcache.Get[string](ctx, c, key)
		out <- getResult{key: key, val: v, ok: ok, err: err}
	}()
}

// coalescingCaches runs f on a cache without and one with a near cache,
// with keys k0..k9 set to v0..v9.
func coalescingCaches(t *testing.T, f func(t *testing.T, db *pgtest.DB, c *pgcache.Cache)) {
	t.Parallel()
	db := pgtest.NewDB(t)
	for _, near := range []bool{false, true} {
		t.Run(fmt.Sprintf("near=%v", near), func(t *testing.T) {
			var c *pgcache.Cache
			if near {
				c = newNearInstance(t, db, "inst", pgcache.CacheConfig{Name: "near"}).cache
			} else {
				c = newCache(t, newManager(t, db.Pool, &pgcache.ManagerConfig{AppName: "plain"}), pgcache.CacheConfig{Name: "plain"})
			}
			items := make([]pgcache.Item, 10)
			for i := range items {
				items[i] = pgcache.Item{Key: fmt.Sprintf("k%d", i), Value: fmt.Sprintf("v%d", i)}
			}
			require.NoError(t, c.MSet(context.Background(), items, 0))
			f(t, db, c)
		})
	}
}

// Gets that arrive while every lane is busy are read together by one
// statement after the first read that ends: 2 lanes, 12 Gets, 3 statements
// (counted, not timed).
func TestGetCoalesces(t *testing.T) {
	coalescingCaches(t, func(t *testing.T, _ *pgtest.DB, c *pgcache.Cache) {
		ctx := context.Background()
		g := gateReads(c, 2, 1, 2)
		out := make(chan getResult, 12)
		getAsync(ctx, c, "k0", out)
		getAsync(ctx, c, "k1", out)
		require.ElementsMatch(t, []string{"k0", "k1"},
			append(receive(t, g.reads, "a first read"), receive(t, g.reads, "a first read")...), "2 lanes, 2 point reads")
		var want []string
		for i := 2; i < 10; i++ {
			getAsync(ctx, c, fmt.Sprintf("k%d", i), out)
			want = append(want, fmt.Sprintf("k%d", i))
		}
		want = append(want, "missing", "k2") // a miss and a key asked twice ride along
		getAsync(ctx, c, "missing", out)
		getAsync(ctx, c, "k2", out)
		g.waitQueued(t, 10)
		g.release(1)
		require.ElementsMatch(t, want, receive(t, g.reads, "the batch"))
		g.release(2)
		for range 12 {
			r := receive(t, out, "a Get")
			require.NoError(t, r.err)
			if r.key == "missing" {
				require.False(t, r.ok)
				continue
			}
			require.True(t, r.ok, r.key)
			require.Equal(t, "v"+r.key[1:], r.val)
		}
		require.Equal(t, uint64(3), c.ReadStatements(), "12 Gets in 3 statements")
	})
}

// A queued Get whose ctx ends returns at once with its error; the others
// of its batch are read, and its key is not.
func TestGetCoalescedCancelledWaiter(t *testing.T) {
	coalescingCaches(t, func(t *testing.T, _ *pgtest.DB, c *pgcache.Cache) {
		ctx := context.Background()
		g := gateReads(c, 1, 1)
		out, gone := make(chan getResult, 10), make(chan getResult, 1)
		getAsync(ctx, c, "k0", out)
		receive(t, g.reads, "the first read")
		cctx, cancel := context.WithCancel(ctx)
		getAsync(cctx, c, "k9", gone)
		for i := 1; i < 4; i++ {
			getAsync(ctx, c, fmt.Sprintf("k%d", i), out)
		}
		g.waitQueued(t, 4)
		cancel()
		r := receive(t, gone, "the cancelled Get")
		require.ErrorIs(t, r.err, context.Canceled)
		g.release(1)
		for range 4 {
			r := receive(t, out, "a Get")
			require.NoError(t, r.err)
			require.Equal(t, "v"+r.key[1:], r.val)
		}
		require.ElementsMatch(t, []string{"k1", "k2", "k3"}, receive(t, g.reads, "the batch"))
	})
}

// A failing batch statement fails the Gets of that batch, and only them:
// the Get before it and the batch after it read their values.
func TestGetCoalescedStatementError(t *testing.T) {
	coalescingCaches(t, func(t *testing.T, db *pgtest.DB, c *pgcache.Cache) {
		ctx := context.Background()
		g := gateReads(c, 1, 1, 2)
		rename := func(from, to string) func() {
			return func() {
				_, err := db.Pool.Exec(ctx, `ALTER TABLE pgcoord.`+from+` RENAME TO `+to)
				require.NoError(t, err)
			}
		}
		// The second statement (batch A) finds no table; the third (batch B)
		// finds it back.
		g.onRead(2, rename("cache_entries", "cache_entries_away"))
		g.onRead(3, rename("cache_entries_away", "cache_entries"))
		first, a, b := make(chan getResult, 1), make(chan getResult, 3), make(chan getResult, 2)
		getAsync(ctx, c, "k0", first)
		receive(t, g.reads, "the first read")
		for i := 1; i <= 3; i++ {
			getAsync(ctx, c, fmt.Sprintf("k%d", i), a)
		}
		g.waitQueued(t, 3)
		g.release(1)
		require.NoError(t, receive(t, first, "the first Get").err)
		require.Len(t, receive(t, g.reads, "batch A"), 3)
		for i := 4; i <= 5; i++ {
			getAsync(ctx, c, fmt.Sprintf("k%d", i), b)
		}
		g.waitQueued(t, 2)
		g.release(2)
		for range 3 {
			r := receive(t, a, "a Get of batch A")
			require.ErrorContains(t, r.err, `pgcache: get "`+r.key+`"`)
			require.ErrorContains(t, r.err, "does not exist")
		}
		for range 2 {
			r := receive(t, b, "a Get of batch B")
			require.NoError(t, r.err)
			require.Equal(t, "v"+r.key[1:], r.val)
		}
	})
}

// Many goroutines reading hits, misses and expired keys each get their
// own key's answer, whatever batches they share.
func TestGetCoalescedConcurrent(t *testing.T) {
	coalescingCaches(t, func(t *testing.T, _ *pgtest.DB, c *pgcache.Cache) {
		ctx := context.Background()
		require.NoError(t, c.Set(ctx, "expired", "x", time.Microsecond))
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Go(func() {
				for i := range 40 {
					k := fmt.Sprintf("k%d", (w+i)%12) // k10, k11 are missing
					v, ok, err := pgcache.Get[string](ctx, c, k)
					if !assert.NoError(t, err) {
						return
					}
					if (w+i)%12 >= 10 {
						assert.False(t, ok, k)
						continue
					}
					assert.True(t, ok, k)
					assert.Equal(t, "v"+k[1:], v)
					_, ok, err = pgcache.Get[string](ctx, c, "expired")
					assert.NoError(t, err)
					assert.False(t, ok, "an expired entry")
				}
			})
		}
		wg.Wait()
	})
}

// benchValue is the value internal/bench's cache rows store (about 100
// bytes of JSON).
type benchValue struct {
	ID    int      `json:"id"`
	Name  string   `json:"name"`
	Email string   `json:"email"`
	Roles []string `json:"roles"`
}

// benchCache is a postgres-store cache of app "bench" holding keys
// user:0..user:999.
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

// BenchmarkMGet100 reads 100 keys: typed MGet, MGet as []byte (as costly
// as the raw pgx read, bench row cache.mget100_bytes.c1: the difference is
// decoding) and untyped MGet. Allocations and cpu-us/op (this process's CPU
// time per op: the client's cost, whatever the server's load) are the
// load-independent figures: go test -bench MGet100 -benchmem.
func BenchmarkMGet100(b *testing.B) {
	c, keys := benchCache(b)
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		op   func(keys []string) error
	}{
		{"typed", func(keys []string) error { _, err := pgcache.MGet[benchValue](ctx, c, keys...); return err }},
		{"bytes", func(keys []string) error { _, err := pgcache.MGet[[]byte](ctx, c, keys...); return err }},
		{"any", func(keys []string) error { _, err := c.MGet(ctx, keys...); return err }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			i := 0
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			for b.Loop() {
				lo := (i * 100) % 900
				i++
				if err := bc.op(keys[lo : lo+100]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-us/op")
		})
	}
}

// cpuTime is the CPU time this process has used (user and system).
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	require.NoError(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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
