package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/pgcache"
)

// cacheKeys is the number of distinct keys the cache rows read and write.
const cacheKeys = 1000

// cacheValue is the value of every benchmarked entry (about 100 bytes of JSON).
type cacheValue struct {
	ID    int      `json:"id"`
	Name  string   `json:"name"`
	Email string   `json:"email"`
	Roles []string `json:"roles"`
}

// Cache benchmarks package pgcache against raw pgx statements on the same
// cache_entries table (same rows, same indexes, same expiry filter), run
// alternately in the same process:
//
//   - cache.get.c1 / cache.get.c8: p50 latency of Get (typed, JSON decoded)
//     vs a raw point SELECT, with 1 and 8 goroutines;
//   - cache.get.c64: Gets per second from 64 goroutines sharing the one
//     pool vs raw point SELECTs from 64 goroutines on that pool (the sides
//     alternate in rounds);
//   - cache.set.c1: Set vs a raw upsert;
//   - cache.mget100.c1: MGet of 100 keys vs a raw SELECT … = ANY($3);
//   - cache.mget100_bytes.c1: the same read as []byte (no JSON decoding),
//     which isolates the library's own cost from decoding;
//   - cache.near_set.c1: Set on a near-cache cache (the upsert and the
//     invalidation message pipelined in one implicit transaction) vs the
//     raw upsert;
//   - cache.near_hit.c1: a near-cache hit (JSON decoded) vs the raw point
//     SELECT, and cache.near_hit_bytes.c1 the same hit read as []byte. These
//     two are measured in separate phases (each side in steady state): an
//     in-memory hit interleaved with network round trips runs cache-cold.
func Cache(ctx context.Context, pool *pgxpool.Pool, opts Options) ([]Row, error) {
	opts = opts.WithDefaults()
	app := opts.Prefix + "-cache"
	table := pgx.Identifier{opts.Schema, "cache_entries"}.Sanitize()
	defer func() {
		_, _ = pool.Exec(context.WithoutCancel(ctx), `DELETE FROM `+table+` WHERE app = $1`, app)
	}()

	ps, err := listen.New(pool, &listen.Config{AppName: app, Schema: opts.Schema, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, err
	}
	if err := ps.Start(ctx); err != nil {
		return nil, err
	}
	defer func() { _ = ps.Close(context.WithoutCancel(ctx)) }()
	m, err := pgcache.NewManager(pool, &pgcache.ManagerConfig{AppName: app, Schema: opts.Schema, PubSub: ps})
	if err != nil {
		return nil, err
	}
	defer func() { _ = m.Close(context.WithoutCancel(ctx)) }()
	c, err := m.CreateCache(ctx, pgcache.CacheConfig{Name: "bench"})
	if err != nil {
		return nil, err
	}
	near, err := m.CreateCache(ctx, pgcache.CacheConfig{Name: "near", NearCache: true})
	if err != nil {
		return nil, err
	}

	keys := make([]string, cacheKeys)
	items := make([]pgcache.Item, cacheKeys)
	for i := range keys {
		keys[i] = "user:" + strconv.Itoa(i)
		items[i] = pgcache.Item{Key: keys[i], Value: cacheValue{ID: i, Name: "user " + strconv.Itoa(i), Email: "u" + strconv.Itoa(i) + "@example.com", Roles: []string{"admin", "member"}}}
	}
	if err := c.MSet(ctx, items, 0); err != nil {
		return nil, err
	}
	if err := near.MSet(ctx, items, 0); err != nil {
		return nil, err
	}
	// Plan with statistics, as a cache in service has (autovacuum analyzes it).
	if _, err := pool.Exec(ctx, `ANALYZE `+table); err != nil {
		return nil, err
	}

	const notExpired = `(expires_at IS NULL OR expires_at > now())`
	rawGet := `SELECT value, kind FROM ` + table + ` WHERE app = $1 AND prefix = $2 AND key = $3 AND ` + notExpired
	rawMGet := `SELECT key, value, kind FROM ` + table + ` WHERE app = $1 AND prefix = $2 AND key = ANY($3::text[]) AND ` + notExpired
	rawSet := `INSERT INTO ` + table + ` (app, prefix, key, kind, value, expires_at, written_at)
VALUES ($1, $2, $3, 0, $4, NULL, clock_timestamp())
ON CONFLICT (app, prefix, key) DO UPDATE SET kind = excluded.kind, value = excluded.value,
  expires_at = excluded.expires_at, written_at = excluded.written_at`
	rawValue := []byte(`{"id":1,"name":"user 1","email":"u1@example.com","roles":["admin","member"]}`)

	raw := func(ctx context.Context, i int) error {
		var (
			v []byte
			k int16
		)
		return pool.QueryRow(ctx, rawGet, app, "bench", keys[i%cacheKeys]).Scan(&v, &k)
	}
	get := func(ctx context.Context, i int) error {
		_, ok, err := pgcache.Get[cacheValue](ctx, c, keys[i%cacheKeys])
		if err == nil && !ok {
			err = fmt.Errorf("bench: cache miss on %s", keys[i%cacheKeys])
		}
		return err
	}
	rawSetOp := func(ctx context.Context, i int) error {
		_, err := pool.Exec(ctx, rawSet, app, "bench", keys[i%cacheKeys], rawValue)
		return err
	}
	setOp := func(ctx context.Context, i int) error {
		return c.Set(ctx, keys[i%cacheKeys], items[i%cacheKeys].Value, 0)
	}
	batch := func(i int) []string {
		lo := (i * 100) % (cacheKeys - 100)
		return keys[lo : lo+100]
	}
	rawMGetOp := func(ctx context.Context, i int) error {
		rows, err := pool.Query(ctx, rawMGet, app, "bench", batch(i))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				k string
				v []byte
				d int16
			)
			if err := rows.Scan(&k, &v, &d); err != nil {
				return err
			}
		}
		return rows.Err()
	}
	mgetOp := func(ctx context.Context, i int) error {
		_, err := pgcache.MGet[cacheValue](ctx, c, batch(i)...)
		return err
	}
	mgetBytesOp := func(ctx context.Context, i int) error {
		_, err := pgcache.MGet[[]byte](ctx, c, batch(i)...)
		return err
	}
	nearOp := func(ctx context.Context, i int) error {
		_, _, err := pgcache.Get[cacheValue](ctx, near, keys[i%100])
		return err
	}
	nearSetOp := func(ctx context.Context, i int) error {
		// Keys 500+ so the near_hit rows' hot keys stay cached.
		return near.Set(ctx, keys[500+i%500], items[i%cacheKeys].Value, 0)
	}
	nearBytesOp := func(ctx context.Context, i int) error {
		_, _, err := pgcache.Get[[]byte](ctx, near, keys[i%100])
		return err
	}
	// Warm the near cache (the first read of each key goes to PostgreSQL).
	for i := range 100 {
		if err := nearOp(ctx, i); err != nil {
			return nil, err
		}
	}

	n := opts.Ops
	mgetN := max(n/10, 20)
	var rows []Row
	for _, r := range []struct {
		name, baseline string
		n, conc        int
		pg, base       func(context.Context, int) error
		measure        func(ctx context.Context, n, conc int, pg, base func(context.Context, int) error) (time.Duration, time.Duration, error)
	}{
		{"cache.get.c1", "pgx point select", n, 1, get, raw, alternate},
		{"cache.get.c8", "pgx point select", n, 8, get, raw, alternate},
		{"cache.set.c1", "pgx upsert", n, 1, setOp, rawSetOp, alternate},
		{"cache.mget100.c1", "pgx select = ANY (100 keys)", mgetN, 1, mgetOp, rawMGetOp, alternate},
		{"cache.mget100_bytes.c1", "pgx select = ANY (100 keys)", mgetN, 1, mgetBytesOp, rawMGetOp, alternate},
		{"cache.near_set.c1", "pgx upsert", n, 1, nearSetOp, rawSetOp, alternate},
		{"cache.near_hit.c1", "pgx point select", n, 1, nearOp, raw, phased},
		{"cache.near_hit_bytes.c1", "pgx point select", n, 1, nearBytesOp, raw, phased},
	} {
		p, b, err := r.measure(ctx, r.n, r.conc, r.pg, r.base)
		if err != nil {
			return nil, fmt.Errorf("bench %s: %w", r.name, err)
		}
		rows = append(rows, Latency(r.name, r.baseline, p, b))
	}
	pg, base, err := alternateThroughput(ctx, max(n, 4*cacheGetConc), cacheGetConc, get, raw)
	if err != nil {
		return nil, fmt.Errorf("bench cache.get.c%d: %w", cacheGetConc, err)
	}
	rows = append(rows, Throughput(fmt.Sprintf("cache.get.c%d", cacheGetConc), fmt.Sprintf("pgx point select, %d goroutines, one pool", cacheGetConc), pg, base))
	if s := near.Stats(); s.NearHits == 0 {
		return nil, fmt.Errorf("bench cache.near_hit.c1: the near cache never hit (listener healthy: %v)", ps.Healthy())
	}
	return rows, nil
}

// cacheGetConc is the concurrency of the cache.get.c64 row.
const cacheGetConc = 64

// alternateThroughput runs n operations of base, then of pg, with conc
// goroutines, in two rounds after a warm-up of each, and returns each side's
// operations per second over its rounds.
func alternateThroughput(ctx context.Context, n, conc int, pg, base func(context.Context, int) error) (float64, float64, error) {
	var elapsed [2]float64
	for round := range 3 {
		for i, op := range []func(context.Context, int) error{base, pg} {
			k := n
			if round == 0 {
				k = max(n/10, conc) // warm-up
			}
			_, tput, err := Run(ctx, k, conc, op)
			if err != nil {
				return 0, 0, err
			}
			if round > 0 {
				elapsed[i] += float64(k) / tput
			}
		}
	}
	return ratio(float64(2*n), elapsed[1]), ratio(float64(2*n), elapsed[0]), nil
}

// phased measures base then pg, each after a warm-up, and returns each
// side's median latency.
func phased(ctx context.Context, n, conc int, pg, base func(context.Context, int) error) (time.Duration, time.Duration, error) {
	var out [2]time.Duration
	for i, op := range []func(context.Context, int) error{base, pg} {
		if _, _, err := Run(ctx, max(n/10, 10), conc, op); err != nil {
			return 0, 0, err
		}
		s, _, err := Run(ctx, n, conc, op)
		if err != nil {
			return 0, 0, err
		}
		out[i] = s.Percentile(50)
	}
	return out[1], out[0], nil
}

// alternate measures pg and base interleaved operation by operation (even
// operations run base, odd ones pg), after a warm-up of each, so load drift
// on a shared machine hits both sides alike; it returns each side's median
// latency.
func alternate(ctx context.Context, n, conc int, pg, base func(context.Context, int) error) (time.Duration, time.Duration, error) {
	warm := max(n/10, 10)
	if _, _, err := Run(ctx, warm, conc, base); err != nil {
		return 0, 0, err
	}
	if _, _, err := Run(ctx, warm, conc, pg); err != nil {
		return 0, 0, err
	}
	total := 2 * max(n, conc)
	lat, _, err := Run(ctx, total, conc, func(ctx context.Context, i int) error {
		if i%2 == 0 {
			return base(ctx, i/2)
		}
		return pg(ctx, i/2)
	})
	if err != nil {
		return 0, 0, err
	}
	var ps, bs Sample
	for i, d := range lat {
		if i%2 == 0 {
			bs = append(bs, d)
		} else {
			ps = append(ps, d)
		}
	}
	return ps.Percentile(50), bs.Percentile(50), nil
}
