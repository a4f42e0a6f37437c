package listen

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/faultproxy"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/migrations"
)

// poolFor opens a pool of at most 6 connections on url (application_name
// name), closed when the test ends.
func poolFor(t *testing.T, url, name string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.ConnConfig.RuntimeParams["application_name"] = name
	cfg.MaxConns = 6
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// migratedPool is poolFor with pgcoord's migrations applied.
func migratedPool(t *testing.T, url, name string) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool := poolFor(t, url, name)
	_, err := migrations.Up(ctx, pool, &migrations.Options{Logger: quietLogger()})
	require.NoError(t, err)
	return pool
}

// switchoverDBs returns the URLs of two databases of one name, with pgcoord's
// migrations applied, on two servers: a database of the shared server and a
// throwaway server (whose transaction ids are low, being new).
func switchoverDBs(t *testing.T) (string, string) {
	t.Helper()
	dbA := pgtest.NewDB(t)
	srvB := pgtest.NewPrivateServer(t)
	// NewPrivateServer returns once the server accepts connections. The
	// deadline starts only now: creating the server (initdb) may take most of
	// a minute on a loaded machine and has a deadline of its own.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, srvB.AdminURL())
	require.NoError(t, err)
	defer admin.Close(ctx) //nolint:errcheck
	_, err = admin.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{dbA.Name}.Sanitize())
	require.NoError(t, err)
	urlB := srvB.URLFor(dbA.Name)
	_ = migratedPool(t, urlB, "migrate")
	return dbA.URL, urlB
}

// switchoverWait bounds the wait for a listener to resynchronise with the
// throwaway server: its first connections to a new database are slow on a
// loaded machine (cold caches), and this is a wait on a signal, not a pause.
const switchoverWait = time.Minute

// psWith creates a PubSub over pool with cfg, app "app", a quiet logger and
// a 200 ms poll unless cfg says otherwise. It is closed when the test ends.
func psWith(t *testing.T, pool *pgxpool.Pool, c Config) *PubSub {
	t.Helper()
	if c.AppName == "" {
		c.AppName = "app"
	}
	if c.Logger == nil {
		c.Logger = quietLogger()
	}
	if c.PollInterval == 0 {
		c.PollInterval = 200 * time.Millisecond
	}
	ps, err := New(pool, &c)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, ps.Close(ctx))
	})
	return ps
}

func psOn(t *testing.T, pool *pgxpool.Pool, id string) *PubSub {
	t.Helper()
	return psWith(t, pool, Config{InstanceID: id, PollInterval: 100 * time.Millisecond, ReconnectMaxDelay: 200 * time.Millisecond})
}

// TestSwitchoverToAnotherCluster moves the subscriber's connections, through
// a TCP proxy, from one server to another whose transaction ids are lower
// (a blue/green switchover, a restored dump, a DNS name moved): the listener
// notices (Stats.Switchovers, a new Epoch, OnResync), and every message
// published on the new server is delivered, on every path (inline, by id,
// catch-up of a transaction, the gap before the reconnection).
func TestSwitchoverToAnotherCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	urlA, urlB := switchoverDBs(t)
	poolA := migratedPool(t, urlA, "pub-a")
	poolB := migratedPool(t, urlB, "pub-b")
	// Server A's transaction ids run ahead of B's.
	for range 500 {
		_, err := poolA.Exec(ctx, `SELECT pg_current_xact_id()`)
		require.NoError(t, err)
	}

	proxy, url := faultproxy.StartFor(t, urlA)
	subPool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(subPool.Close)
	sub := psOn(t, subPool, "sub")
	var resyncs atomic.Int64
	got := subscribe(t, sub, "ch", &SubscribeOpts{OnResync: func(context.Context) { resyncs.Add(1) }})
	require.NoError(t, sub.Start(ctx))
	pubA := psOn(t, poolA, "pub-a")
	pubB := psOn(t, poolB, "pub-b")

	require.NoError(t, pubA.Publish(ctx, "ch", "on-a", nil))
	got.waitPayload(t, `"on-a"`)
	epoch := sub.Epoch()

	// The switchover: new connections reach B; a message is published on B
	// before the subscriber's connections are cut.
	hostB, err := faultproxy.HostPort(urlB)
	require.NoError(t, err)
	proxy.SetTarget(hostB)
	require.NoError(t, pubB.Publish(ctx, "ch", "gap", nil))
	proxy.Cut()

	waitState(t, sub, switchoverWait, func() bool { return sub.Stats().Switchovers == 1 && sub.Healthy() })
	got.waitPayload(t, `"gap"`)
	require.Greater(t, sub.Epoch(), epoch, "the epoch advances, so near caches flush")
	waitState(t, sub, waitFor, func() bool { return resyncs.Load() >= 1 })

	require.NoError(t, pubB.Publish(ctx, "ch", "inline", nil))
	require.NoError(t, pubB.Publish(ctx, "ch", strings.Repeat("x", 9000), nil)) // by id
	tx, err := poolB.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, pubB.PublishTx(ctx, tx, "ch", "tx-1", nil))
	require.NoError(t, pubB.PublishTx(ctx, tx, "ch", "tx-2", nil))
	require.NoError(t, tx.Commit(ctx))
	got.waitPayload(t, `"tx-2"`)
	got.waitPayload(t, `"inline"`)
	got.waitPayload(t, `"`+strings.Repeat("x", 9000)+`"`)
	require.Equal(t, []string{`"on-a"`, `"gap"`, `"inline"`, `"` + strings.Repeat("x", 9000) + `"`, `"tx-1"`, `"tx-2"`}, got.payloads())
	require.Equal(t, int64(1), sub.Stats().Switchovers)
}

// TestSwitchoverDetectedByXidRegression: on one server, a watermark above
// the server's transaction ids (what a point-in-time restore or a failover
// that lost its tail leaves) is found by the next poll, counted, and
// messages keep arriving.
func TestSwitchoverDetectedByXidRegression(t *testing.T) {
	ctx, db := setup(t)
	pub := started(t, db, "inst-pub", nil)
	sub := started(t, db, "inst-sub", nil)
	got := subscribe(t, sub, "ch", nil)
	barrier(t, pub, got, "ch")

	sub.led.shiftXmax(1 << 32) // as if the transaction ids had gone back
	waitState(t, sub, switchoverWait, func() bool { return sub.Stats().Switchovers == 1 && sub.Healthy() })
	tx, err := pub.pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, pub.PublishTx(ctx, tx, "ch", "after", nil))
	require.NoError(t, tx.Commit(ctx))
	got.waitPayload(t, `"after"`)
}
