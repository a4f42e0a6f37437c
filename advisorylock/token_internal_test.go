package advisorylock

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/migrations"
)

// startedBlock is started with blocks of block tokens per lease row (a
// divisor of tokenBlock), so that tests reach a block's end.
func startedBlock(t *testing.T, ctx context.Context, pool *pgxpool.Pool, cfg *Config, block int64, onQueued func()) *Manager {
	t.Helper()
	m, err := New(pool, cfg)
	require.NoError(t, err)
	m.q = buildQueries(m.cfg.Schema, m.channel, block)
	m.onQueued = onQueued
	require.NoError(t, m.Start(ctx))
	t.Cleanup(func() { require.NoError(t, m.Close(context.Background())) })
	return m
}

// tokenPair opens a parallel test with its own database and two started
// instances a and b (poll, block: see startedBlock); qa and qb receive a
// value each time that instance joins a key's FIFO.
func tokenPair(t *testing.T, poll time.Duration, block int64) (ctx context.Context, db *pgtest.DB, a, b *Manager, qa, qb chan struct{}) {
	t.Helper()
	t.Parallel()
	db = pgtest.NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	qa, qb = make(chan struct{}, 64), make(chan struct{}, 64)
	a = startedBlock(t, ctx, db.Pool, &Config{InstanceID: "a", PollInterval: poll}, block, func() { qa <- struct{}{} })
	b = startedBlock(t, ctx, db.Pool, &Config{InstanceID: "b", PollInterval: poll}, block, func() { qb <- struct{}{} })
	return ctx, db, a, b, qa, qb
}

// sequenceValue is the token sequence's last value.
func sequenceValue(t *testing.T, ctx context.Context, pool *pgxpool.Pool) int64 {
	t.Helper()
	var v int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT last_value FROM pgcoord.lock_tokens`).Scan(&v))
	return v
}

// handOver makes to wait for key (it joins the FIFO), releases l and
// returns to's grant, designated by that release.
func handOver(t *testing.T, ctx context.Context, l *Lock, to *Manager, queued <-chan struct{}) *Lock {
	t.Helper()
	got := make(chan *Lock, 1)
	errs := make(chan error, 1)
	go func() {
		l2, err := to.Acquire(ctx, l.Key(), time.Minute)
		if err != nil {
			errs <- err
			return
		}
		got <- l2
	}()
	select {
	case <-queued:
	case err := <-errs:
		t.Fatalf("acquire: %v", err)
	case <-ctx.Done():
		t.Fatal("the waiter never joined the FIFO")
	}
	require.NoError(t, l.Release(ctx))
	select {
	case l2 := <-got:
		return l2
	case err := <-errs:
		t.Fatalf("acquire: %v", err)
	case <-ctx.Done():
		t.Fatal("no handoff")
	}
	return nil
}

// A grant on an existing lease row takes the next token of the row's block
// under the row lock: no nextval, so no WAL record of the sequence and no
// flushed commit on the grant path (issue 17). Handoffs across instances
// (the designating release, the waiter's entry into the FIFO) and
// uncontended grants each add exactly 1 to the key's token.
func TestGrantsDrawNoTokenWithinBlock(t *testing.T) {
	ctx, db, a, b, qa, qb := tokenPair(t, time.Hour, tokenBlock)

	l, err := a.Acquire(ctx, "k", time.Minute)
	require.NoError(t, err)
	// Warm-up: each instance's first wait for the key (its INSERT attempt
	// draws a block the row does not take) makes the key hot for it.
	l = handOver(t, ctx, l, b, qb)
	l = handOver(t, ctx, l, a, qa)
	before, prev := sequenceValue(t, ctx, db.Pool), l.Token()

	for i := range 10 {
		l = handOver(t, ctx, l, b, qb)
		require.Equal(t, prev+1, l.Token(), "handoff %d to b", i)
		prev = l.Token()
		l = handOver(t, ctx, l, a, qa)
		require.Equal(t, prev+1, l.Token(), "handoff %d to a", i)
		prev = l.Token()
	}
	require.NoError(t, l.Release(ctx))
	for range 5 { // uncontended: the short statements
		l, err = a.TryAcquire(ctx, "k", 0)
		require.NoError(t, err)
		require.Equal(t, prev+1, l.Token())
		prev = l.Token()
		require.NoError(t, l.Release(ctx))
	}
	require.Equal(t, before, sequenceValue(t, ctx, db.Pool), "a grant on an existing row drew from the token sequence")
}

// Tokens strictly increase per key over every kind of grant and across the
// end of a row's block (blocks of 4 here), and no two keys share a token:
// uncontended grants, handoffs, TryAcquire, takeover of an expired lease,
// and a row deleted by the sweeper (the next grant creates the row again
// with a new block).
func TestTokensIncreaseAcrossBlocks(t *testing.T) {
	ctx, db, a, b, qa, qb := tokenPair(t, 50*time.Millisecond, 4)

	seen := map[int64]string{}
	last := map[string]int64{}
	record := func(l *Lock) {
		t.Helper()
		require.Greater(t, l.Token(), last[l.Key()], "key %s", l.Key())
		if k, ok := seen[l.Token()]; ok {
			require.Equal(t, l.Key(), k, "token %d of two keys", l.Token())
		}
		seen[l.Token()], last[l.Key()] = l.Key(), l.Token()
		var end int64
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT token_end FROM pgcoord.locks WHERE app = 'main' AND key = $1 AND token = $2`,
			l.Key(), l.Token()).Scan(&end))
		require.LessOrEqual(t, l.Token(), end)
		require.Less(t, end-l.Token(), int64(4), "the row's block is 4 tokens")
	}
	for _, key := range []string{"k", "j"} {
		for range 6 { // uncontended
			l, err := a.Acquire(ctx, key, time.Minute)
			require.NoError(t, err)
			record(l)
			require.NoError(t, l.Release(ctx))
		}
		l, err := a.Acquire(ctx, key, time.Minute)
		require.NoError(t, err)
		record(l)
		for range 3 { // handoffs both ways
			l = handOver(t, ctx, l, b, qb)
			record(l)
			l = handOver(t, ctx, l, a, qa)
			record(l)
		}
		require.NoError(t, l.Release(ctx))

		// Takeover: a lease expires while held, another instance takes it.
		l, err = a.Acquire(ctx, key, 20*time.Millisecond)
		require.NoError(t, err)
		record(l)
		<-l.Done()
		l2, err := b.Acquire(ctx, key, time.Minute)
		require.NoError(t, err)
		record(l2)
		require.NoError(t, l2.Release(ctx))

		// The sweeper deletes the row; the next grant creates it again.
		_, err = db.Pool.Exec(ctx, `UPDATE pgcoord.locks SET updated_at = now() - interval '1 hour' WHERE key = $1`, key)
		require.NoError(t, err)
		n, err := a.sweep(ctx)
		require.NoError(t, err)
		require.EqualValues(t, 1, n)
		l, err = b.TryAcquire(ctx, key, 0)
		require.NoError(t, err)
		record(l)
		require.NoError(t, l.Release(ctx))
	}
}

// A server crash (immediate shutdown) empties the UNLOGGED lease table:
// every row is created again and draws a new block, above every token handed
// out before the crash, also on a server with synchronous_commit off (the
// draw turns it on for its transaction: a block whose nextval was not
// flushed would come back after the crash).
func TestTokensIncreaseAcrossServerCrash(t *testing.T) {
	t.Parallel()
	srv := pgtest.NewPrivateServer(t)
	db := srv.NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool := db.NewPool(t, &pgtest.PoolOptions{AppName: "a", MaxConns: 4})
	a := started(t, ctx, pool, &Config{InstanceID: "a"}, nil)
	var highest int64
	for _, key := range []string{"k", "j"} {
		for range 3 {
			l, err := a.Acquire(ctx, key, time.Minute)
			require.NoError(t, err)
			highest = max(highest, l.Token())
			require.NoError(t, l.Release(ctx))
		}
	}
	require.NoError(t, srv.Crash(ctx))
	require.NoError(t, srv.Start(ctx))
	// The test's own read: on a pool without the crash's dead sessions (a
	// pooled session idle under a second is reused without a ping). The
	// Manager keeps its pool as it is.
	db.Pool.Reset()
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pgcoord.locks`).Scan(&n))
	require.Zero(t, n, "the crash emptied the UNLOGGED lease table")
	for _, key := range []string{"k", "j"} {
		l, err := a.Acquire(ctx, key, time.Minute) // waits for the liveness session to come back
		require.NoError(t, err)
		require.Greater(t, l.Token(), highest, "key %s after the crash", key)
		require.NoError(t, l.Release(ctx))
	}
}

// A rolling upgrade to migration 16: rows granted by the previous release
// (a nextval per grant, no block) and grants that instances of the previous
// release still make next to new ones stay below every later grant of the
// key; a new grant after an old one takes a new block.
func TestTokensIncreaseOverUpgrade(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := migrations.Down(ctx, db.Pool, &migrations.Options{TargetVersion: 15})
	require.NoError(t, err)
	// The previous release's grant: a token from nextval (increment 1).
	const oldGrant = `INSERT INTO pgcoord.locks AS l (app, key, token, owner_id, owner, expires_at)
VALUES ('main', $1, nextval('pgcoord.lock_tokens'), 2000000000, 'old', '-infinity')
ON CONFLICT (app, key) DO UPDATE SET token = nextval('pgcoord.lock_tokens'), owner = 'old', expires_at = '-infinity'
RETURNING l.token`
	var oldK, oldJ int64
	for range 3 {
		require.NoError(t, db.Pool.QueryRow(ctx, oldGrant, "k").Scan(&oldK))
		require.NoError(t, db.Pool.QueryRow(ctx, oldGrant, "j").Scan(&oldJ))
	}
	_, err = migrations.Up(ctx, db.Pool, nil)
	require.NoError(t, err)
	m := started(t, ctx, db.Pool, &Config{InstanceID: "new"}, nil)

	grant := func(key string) (token, end int64) {
		t.Helper()
		l, err := m.Acquire(ctx, key, time.Minute)
		require.NoError(t, err)
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT token_end FROM pgcoord.locks WHERE key = $1`, key).Scan(&end))
		require.NoError(t, l.Release(ctx))
		return l.Token(), end
	}
	k1, end := grant("k")
	require.Greater(t, k1, max(oldK, oldJ), "above every token of the previous release")
	require.Equal(t, k1+tokenBlock-1, end, "a row of the previous release takes a block at its first new grant")
	k2, _ := grant("k")
	require.Equal(t, k1+1, k2)
	j1, _ := grant("j")
	require.Greater(t, j1, k1+tokenBlock-1, "blocks are disjoint")

	// An instance of the previous release grants k during the upgrade.
	var old2 int64
	require.NoError(t, db.Pool.QueryRow(ctx, oldGrant, "k").Scan(&old2))
	require.Greater(t, old2, k2)
	k3, end := grant("k")
	require.Greater(t, k3, old2)
	require.Equal(t, k3+tokenBlock-1, end, "after an old grant, a new block")

	// And back: after Down, the previous release's nextval is above every block.
	_, err = migrations.Down(ctx, db.Pool, &migrations.Options{TargetVersion: 15})
	require.NoError(t, err)
	var old3 int64
	require.NoError(t, db.Pool.QueryRow(ctx, oldGrant, "k").Scan(&old3))
	require.Greater(t, old3, k3+tokenBlock-1)
	_, err = migrations.Up(ctx, db.Pool, nil)
	require.NoError(t, err)
}
