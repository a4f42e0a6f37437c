// Command redis-vs-pgcoord runs the operations a team would otherwise use Redis
// for — GET/SET/MGET, PUBLISH→SUBSCRIBE, and a lock (SET NX PX + compare-and-
// delete) — on Redis and on pgcoord, in one run on one machine, and prints
// pgcoord's cost over Redis's for each.
//
// It is its own Go module so that pgcoord never depends on a Redis client.
//
//	cd bench/redis && go run . [--ops 2000] [--json]
//
// Redis comes from REDIS_URL, else a redis-server binary (Debian's
// redis-server) started on a free loopback port and stopped after. PostgreSQL
// comes from PGCOORD_DATABASE_URL, else a throwaway local server.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/internal/bench"
	"github.com/pgcoord/pgcoord/internal/pglocal"
	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/pgcache"
)

// Row compares one operation: Unit "us" is a latency (lower is better).
type Row struct {
	Name      string  `json:"name"`
	Pgcoord   float64 `json:"pgcoord"`
	Redis     float64 `json:"redis"`
	Unit      string  `json:"unit"`
	CostRatio float64 `json:"cost_ratio"` // pgcoord / Redis
}

func main() { bench.Main("redis-vs-pgcoord", run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("redis-vs-pgcoord", flag.ContinueOnError)
	flags := bench.AddFlags(fs, 2000)
	ops, asJSON, fast := flags.Ops, flags.JSON, flags.Fast
	if err := fs.Parse(args); err != nil {
		return err
	}

	rdb, stopRedis, err := openRedis(ctx)
	if err != nil {
		return err
	}
	defer stopRedis()
	pool, stopPG, err := bench.OpenPostgres(ctx, &pglocal.Options{Durable: !*fast})
	if err != nil {
		return err
	}
	defer stopPG()

	rows, err := compare(ctx, rdb, pool, *ops)
	if err != nil {
		return err
	}
	if *asJSON {
		return bench.WriteJSON(stdout, rows)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "NAME\tPGCOORD\tREDIS\tUNIT\tPGCOORD/REDIS\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%s\t%.2f\t\n", r.Name, r.Pgcoord, r.Redis, r.Unit, r.CostRatio)
	}
	return tw.Flush()
}

func latencyRow(name string, pg, rd bench.Sample) Row {
	p, r := us(pg.Percentile(50)), us(rd.Percentile(50))
	return Row{Name: name, Pgcoord: p, Redis: r, Unit: "us p50", CostRatio: p / r}
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

func compare(ctx context.Context, rdb *redis.Client, pool *pgxpool.Pool, n int) ([]Row, error) {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	app := fmt.Sprintf("redisbench%d", time.Now().UnixNano())
	var rows []Row

	// Pub/sub first: the near-cache needs a running PubSub too.
	pub, err := listen.New(pool, &listen.Config{AppName: app, InstanceID: "pub", Logger: logger})
	if err != nil {
		return nil, err
	}
	sub, err := listen.New(pool, &listen.Config{AppName: app, InstanceID: "sub", Logger: logger})
	if err != nil {
		return nil, err
	}
	for _, ps := range []*listen.PubSub{pub, sub} {
		if err := ps.Start(ctx); err != nil {
			return nil, err
		}
		defer ps.Close(context.WithoutCancel(ctx))
	}

	mgr, err := pgcache.NewManager(pool, &pgcache.ManagerConfig{AppName: app, Logger: logger, PubSub: pub})
	if err != nil {
		return nil, err
	}
	if err := mgr.Start(ctx); err != nil {
		return nil, err
	}
	defer mgr.Close(context.WithoutCancel(ctx))
	cache, err := mgr.CreateCache(ctx, pgcache.CacheConfig{Name: "plain"})
	if err != nil {
		return nil, err
	}
	near, err := mgr.CreateCache(ctx, pgcache.CacheConfig{Name: "near", NearCache: true})
	if err != nil {
		return nil, err
	}
	value := map[string]any{"id": 42, "name": "token policy", "ttl": 3600}
	raw, _ := json.Marshal(value)
	keys := make([]string, 100)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
		if err := cache.Set(ctx, keys[i], value, 0); err != nil {
			return nil, err
		}
		if err := rdb.Set(ctx, keys[i], raw, 0).Err(); err != nil {
			return nil, err
		}
	}
	if err := near.Set(ctx, "hot", value, 0); err != nil {
		return nil, err
	}

	// measure alternates the two sides in chunks, so that drift in the
	// machine's load (a shared VM) hits both alike.
	measure := func(name string, pgOp, rdOp func(ctx context.Context, i int) error) error {
		const chunk = 100
		var pg, rd bench.Sample
		for done := 0; done < n; done += chunk {
			m := min(chunk, n-done)
			s, _, err := bench.Run(ctx, m, 1, func(ctx context.Context, i int) error { return pgOp(ctx, done+i) })
			if err != nil {
				return fmt.Errorf("%s (pgcoord): %w", name, err)
			}
			pg = append(pg, s...)
			s, _, err = bench.Run(ctx, m, 1, func(ctx context.Context, i int) error { return rdOp(ctx, done+i) })
			if err != nil {
				return fmt.Errorf("%s (redis): %w", name, err)
			}
			rd = append(rd, s...)
		}
		rows = append(rows, latencyRow(name, pg, rd))
		return nil
	}
	steps := []struct {
		name       string
		pgOp, rdOp func(ctx context.Context, i int) error
	}{
		{"get", func(ctx context.Context, i int) error { _, _, err := cache.Get(ctx, keys[i%100]); return err },
			func(ctx context.Context, i int) error { return rdb.Get(ctx, keys[i%100]).Err() }},
		{"get.near_hit", func(ctx context.Context, i int) error { _, _, err := near.Get(ctx, "hot"); return err },
			func(ctx context.Context, i int) error { return rdb.Get(ctx, keys[0]).Err() }},
		{"set", func(ctx context.Context, i int) error { return cache.Set(ctx, keys[i%100], value, 0) },
			func(ctx context.Context, i int) error { return rdb.Set(ctx, keys[i%100], raw, 0).Err() }},
		{"mget100", func(ctx context.Context, i int) error { _, err := cache.MGet(ctx, keys...); return err },
			func(ctx context.Context, i int) error { return rdb.MGet(ctx, keys...).Err() }},
	}
	for _, s := range steps {
		if err := measure(s.name, s.pgOp, s.rdOp); err != nil {
			return nil, err
		}
	}

	// Publish → deliver, one message in flight at a time.
	got := make(chan struct{}, 1)
	var seq atomic.Int64
	s, err := sub.Subscribe(ctx, "bench", func(ctx context.Context, msg listen.Message) error {
		seq.Add(1)
		got <- struct{}{}
		return nil
	}, nil)
	if err != nil {
		return nil, err
	}
	defer s.Unsubscribe()
	rsub := rdb.Subscribe(ctx, "bench")
	defer rsub.Close()
	if _, err := rsub.Receive(ctx); err != nil { // subscription confirmation
		return nil, err
	}
	rch := rsub.Channel()
	if err := measure("publish_deliver", func(ctx context.Context, i int) error {
		if err := pub.Publish(ctx, "bench", i, nil); err != nil {
			return err
		}
		return waitOne(ctx, got)
	}, func(ctx context.Context, i int) error {
		if err := rdb.Publish(ctx, "bench", i).Err(); err != nil {
			return err
		}
		select {
		case <-rch:
			return nil
		case <-time.After(10 * time.Second):
			return errors.New("redis message not delivered")
		}
	}); err != nil {
		return nil, err
	}

	// Lock: pgcoord TryAcquire+Release vs Redis SET NX PX + compare-and-delete.
	locks, err := advisorylock.New(pool, &advisorylock.Config{AppName: app, Logger: logger})
	if err != nil {
		return nil, err
	}
	if err := locks.Start(ctx); err != nil {
		return nil, err
	}
	defer locks.Close(context.WithoutCancel(ctx))
	unlock := redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`)
	if err := measure("lock_unlock", func(ctx context.Context, i int) error {
		l, err := locks.TryAcquire(ctx, "bench-lock", 0)
		if err != nil {
			return err
		}
		return l.Release(ctx)
	}, func(ctx context.Context, i int) error {
		token := strconv.Itoa(i)
		ok, err := rdb.SetNX(ctx, "bench-lock", token, 30*time.Second).Result()
		if err != nil || !ok {
			return errors.Join(err, errors.New("redis lock not acquired"))
		}
		return unlock.Run(ctx, rdb, []string{"bench-lock"}, token).Err()
	}); err != nil {
		return nil, err
	}
	return rows, nil
}

func waitOne(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("pgcoord message not delivered")
	case <-ctx.Done():
		return ctx.Err()
	}
}

func openRedis(ctx context.Context) (*redis.Client, func(), error) {
	if u := os.Getenv("REDIS_URL"); u != "" {
		opt, err := redis.ParseURL(u)
		if err != nil {
			return nil, nil, err
		}
		c := redis.NewClient(opt)
		return c, func() { _ = c.Close() }, c.Ping(ctx).Err()
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, nil, errors.New("no Redis: set REDIS_URL or install redis-server (apt-get install -y redis-server)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(ctx).Err() != nil {
		if time.Now().After(deadline) {
			stop()
			return nil, nil, errors.New("redis-server did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return c, func() { _ = c.Close(); stop() }, nil
}
