package pgcache_test

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/pgcache"
)

// roundTrips counts what a pool sends on behalf of contexts marked with
// traced: statements sent alone, batches, and each batch's statements.
type roundTrips struct {
	mu      sync.Mutex
	queries int
	batches [][]string
}

type tracedKey struct{}

func traced(ctx context.Context) context.Context { return context.WithValue(ctx, tracedKey{}, true) }

func (r *roundTrips) mine(ctx context.Context) bool { return ctx.Value(tracedKey{}) != nil }

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	if r.mine(ctx) {
		r.mu.Lock()
		r.queries++
		r.mu.Unlock()
	}
	return ctx
}

func (r *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (r *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	if r.mine(ctx) {
		r.mu.Lock()
		r.batches = append(r.batches, nil)
		r.mu.Unlock()
	}
	return ctx
}

func (r *roundTrips) TraceBatchQuery(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	if r.mine(ctx) {
		r.mu.Lock()
		r.batches[len(r.batches)-1] = append(r.batches[len(r.batches)-1], d.SQL)
		r.mu.Unlock()
	}
}

func (r *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

func (r *roundTrips) reset() (queries int, batches [][]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	queries, batches = r.queries, r.batches
	r.queries, r.batches = 0, nil
	return queries, batches
}

// A write to a near-cached prefix that needs no results is one round trip:
// one batch (synchronous_commit off for it, the write, the invalidation);
// another instance's near cache drops the old value. A write that needs
// results (a counter) still runs, in a transaction.
func TestNearWriteIsOneRoundTrip(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	other := newNearInstance(t, db, "other", pgcache.CacheConfig{})
	rt := &roundTrips{}
	cfg := db.Pool.Config()
	cfg.ConnConfig.Tracer = rt
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	c := newCache(t, newManager(t, pool, &pgcache.ManagerConfig{AppName: "app", PubSub: other.ps}), pgcache.CacheConfig{Name: "near", NearCache: true})

	require.NoError(t, c.Set(traced(ctx), "k", "v0", 0)) // prepares the statements
	v, ok := getString(t, other.cache, "k")
	require.True(t, ok)
	require.Equal(t, "v0", v)
	rt.reset()
	seen := invalCount(other)
	require.NoError(t, c.Set(traced(ctx), "k", "v1", 0))
	queries, batches := rt.reset()
	require.Zero(t, queries, "statements sent alone")
	require.Len(t, batches, 1, "one round trip")
	require.Len(t, batches[0], 3, "synchronous_commit off, the upsert, the invalidation: %q", batches[0])
	require.Contains(t, batches[0][0], "synchronous_commit")
	waitInvalidations(t, other, seen+1)
	v, _ = getString(t, other.cache, "k")
	require.Equal(t, "v1", v, "no stale near entry after the write committed")

	n, err := c.Counter().Incr(traced(ctx), "n")
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	queries, _ = rt.reset()
	require.Positive(t, queries, "a counter needs its result: a transaction, not a pipeline")
}
