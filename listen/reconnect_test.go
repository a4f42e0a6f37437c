package listen

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// TestReconnectExactlyOnce10k publishes 10,000 messages (some too large to
// travel inline, some in multi-message transactions) while the subscriber's
// listener backend is killed again and again: every message arrives exactly once.
func TestReconnectExactlyOnce10k(t *testing.T) {
	ctx, db := setup(t)
	pub := started(t, db, "inst-pub", nil)
	sub := started(t, db, "inst-sub", nil)

	const total = 10000
	const publishers = 4
	var (
		mu         sync.Mutex
		seen       = make(map[int]int, total)
		last       = map[int]int{}
		outOfOrder []string
		recvd      atomic.Int64
	)
	_, err := sub.Subscribe(ctx, "ch", func(_ context.Context, m Message) error {
		var p struct{ N int }
		if err := json.Unmarshal(m.Payload, &p); err != nil {
			return err
		}
		mu.Lock()
		seen[p.N]++
		// Publisher goroutine g publishes g, g+4, g+8… one after another.
		g := p.N % publishers
		if prev, ok := last[g]; ok && p.N <= prev {
			outOfOrder = append(outOfOrder, fmt.Sprintf("%d after %d", p.N, prev))
		}
		last[g] = p.N
		mu.Unlock()
		recvd.Add(1)
		return nil
	}, &SubscribeOpts{BufferSize: 20000})
	require.NoError(t, err)

	pad := strings.Repeat("p", 9000)
	published := make(chan error, publishers)
	for g := range publishers {
		go func() {
			for i := g; i < total; {
				var err error
				switch {
				case i%500 == 0: // by reference
					err = pub.Publish(ctx, "ch", map[string]any{"n": i, "pad": pad}, nil)
					i += publishers
				case i%97 == 0 && i+publishers*2 < total: // three in one transaction
					tx, berr := pub.pool.Begin(ctx)
					if berr != nil {
						published <- berr
						return
					}
					for k := 0; k < 3 && err == nil; k++ {
						err = pub.PublishTx(ctx, tx, "ch", map[string]int{"n": i}, nil)
						i += publishers
					}
					if err == nil {
						err = tx.Commit(ctx)
					}
				default:
					err = pub.Publish(ctx, "ch", map[string]int{"n": i}, nil)
					i += publishers
				}
				if err != nil {
					published <- fmt.Errorf("publish %d: %w", i, err)
					return
				}
			}
			published <- nil
		}()
	}

	// Kill the subscriber's sessions (its listener among them) over and over,
	// each time after it reconnected and received some more messages.
	killerDone := make(chan int)
	stopKiller := make(chan struct{})
	go func() {
		kills := 0
		ticker := time.NewTicker(2 * time.Millisecond)
		defer ticker.Stop()
		for {
			before := sub.Stats().Reconnects
			if _, err := db.TerminateBackends(ctx, "inst-sub"); err == nil {
				kills++
			}
			from := recvd.Load()
			deadline := time.Now().Add(10 * time.Second)
			for sub.Stats().Reconnects == before || recvd.Load() < from+300 {
				select {
				case <-stopKiller:
					killerDone <- kills
					return
				case <-ticker.C:
				}
				if time.Now().After(deadline) {
					break
				}
			}
		}
	}()
	for range publishers {
		require.NoError(t, <-published)
	}
	close(stopKiller)
	kills := <-killerDone

	waitState(t, sub, 60*time.Second, func() bool { return recvd.Load() >= total }, "received %d of %d", recvd.Load(), total)
	// Another round trip after everything arrived: nothing more comes.
	got := subscribe(t, sub, "end", nil)
	barrier(t, pub, got, "end")
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, seen, total)
	// Per-publisher commit order holds, also while a catch-up of several
	// pages is under way (package doc, Order).
	require.Empty(t, outOfOrder, "messages overtaken by later ones of their publisher")
	for n, c := range seen {
		require.Equal(t, 1, c, "message %d delivered %d times", n, c)
	}
	require.Equal(t, int64(total), recvd.Load())
	st := sub.Stats()
	t.Logf("kills=%d reconnects=%d caught_up=%d", kills, st.Reconnects, st.CaughtUp)
	require.Positive(t, st.Reconnects)
	require.Positive(t, st.CaughtUp)
}

// TestReconnectResync: after the listener is killed, Healthy turns false,
// the subscription gets OnResync before the messages it missed, and then
// Healthy is true again.
func TestReconnectResync(t *testing.T) {
	ctx, db := setup(t)
	pub := started(t, db, "inst-pub", nil)
	sub := instance(t, db, "inst-sub", &Config{ReconnectMaxDelay: 50 * time.Millisecond})
	var (
		mu     sync.Mutex
		events []string
	)
	_, err := sub.Subscribe(ctx, "ch", func(_ context.Context, m Message) error {
		mu.Lock()
		events = append(events, string(m.Payload))
		mu.Unlock()
		return nil
	}, &SubscribeOpts{OnResync: func(context.Context) {
		mu.Lock()
		events = append(events, "resync")
		mu.Unlock()
	}})
	require.NoError(t, err)
	require.NoError(t, sub.Start(ctx))
	require.True(t, sub.Healthy())

	require.NoError(t, pub.Publish(ctx, "ch", "before", nil))
	waitEvents := func(n int) {
		t.Helper()
		waitState(t, sub, waitFor, func() bool { mu.Lock(); defer mu.Unlock(); return len(events) >= n }, "want %d events", n)
	}
	waitEvents(1)

	pid := sub.listenerPID.Load()
	_, err = db.Pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, int32(pid))
	require.NoError(t, err)
	waitState(t, sub, waitFor, func() bool { return !sub.Healthy() })
	// Missed while disconnected or reconnecting.
	require.NoError(t, pub.Publish(ctx, "ch", "during", nil))
	waitState(t, sub, waitFor, sub.Healthy)
	waitEvents(3)
	require.NoError(t, pub.Publish(ctx, "ch", "after", nil))
	waitEvents(4)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{`"before"`, "resync", `"during"`, `"after"`}, events)
	require.NotEqual(t, pid, sub.listenerPID.Load())
	require.Equal(t, int64(1), sub.Stats().Reconnects)
}

// TestCatchUpOutOfOrderCommit drives the listener's catch-up directly: a
// transaction that allocated its id first but commits after a later
// message was read is still caught up, because the watermark is the
// snapshot's xmin and not the highest id seen.
func TestCatchUpOutOfOrderCommit(t *testing.T) {
	ctx, db := setup(t)
	pub := instance(t, db, "inst-pub", nil)
	sub := instance(t, db, "inst-sub", nil) // not started: the test plays its listener
	got := subscribe(t, sub, "ch", nil)
	l := newListener(sub)
	conn, _, err := l.connect(ctx, true, nil)
	require.NoError(t, err)
	defer conn.Close(ctx) //nolint:errcheck

	slow, err := pub.pool.Begin(ctx)
	require.NoError(t, err)
	defer slow.Rollback(ctx) //nolint:errcheck
	require.NoError(t, pub.PublishTx(ctx, slow, "ch", "first-id-commits-last", nil))
	require.NoError(t, pub.Publish(ctx, "ch", "second-id-commits-first", nil))

	catchUp := func() { readLog(t, l, conn) }
	catchUp()
	got.waitLen(t, 1)
	require.Equal(t, []string{`"second-id-commits-first"`}, got.payloads())
	var slowXid uint64
	require.NoError(t, slow.QueryRow(ctx, `SELECT pg_current_xact_id()`).Scan(&slowXid))
	require.False(t, sub.led.snapEnded(slowXid), "the ledger must not settle an open transaction")
	require.NoError(t, slow.Commit(ctx))
	catchUp()
	catchUp() // idempotent
	got.waitLen(t, 2)
	require.Equal(t, []string{`"second-id-commits-first"`, `"first-id-commits-last"`}, got.payloads())
	msgs := got.all()
	require.Less(t, msgs[1].ID, msgs[0].ID)
}

func TestPrune(t *testing.T) {
	ctx, db := setup(t)
	a := started(t, db, "inst-a", &Config{Retention: time.Hour, PruneInterval: -1})
	other := started(t, db, "inst-o", &Config{AppName: "other", Retention: time.Hour, PruneInterval: -1})
	for i := range 5 {
		require.NoError(t, a.Publish(ctx, "ch", i, nil))
		require.NoError(t, other.Publish(ctx, "ch", i, nil))
	}
	pin, err := db.Pool.Begin(ctx) // a transaction left open elsewhere holds back only its own rows
	require.NoError(t, err)
	defer pin.Rollback(ctx) //nolint:errcheck
	_, err = pin.Exec(ctx, `SELECT pg_current_xact_id()`)
	require.NoError(t, err)
	n, err := a.prune(ctx) // writes a retention marker; none is older than Retention yet
	require.NoError(t, err)
	require.Zero(t, n)
	_, err = db.Pool.Exec(ctx, `UPDATE pgcoord.messages SET published_at = now() - interval '2 hours' WHERE payload::text IN ('0', '1', '2') OR sender = ''`)
	require.NoError(t, err)

	// While another session holds the prune lock, this instance skips.
	lockTx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer lockTx.Rollback(ctx) //nolint:errcheck
	_, err = lockTx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, a.pruneKey)
	require.NoError(t, err)
	n, err = a.prune(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	require.NoError(t, lockTx.Rollback(ctx))

	n, err = a.prune(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(3), n) // app's old rows only
	var left int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pgcoord.messages WHERE sender <> ''`).Scan(&left))
	require.Equal(t, 7, left)
}

// TestServerRestart: PostgreSQL restarts under a started PubSub. The listener
// reconnects with backoff, signals a resync, and delivers what was published
// while it was away, once.
func TestServerRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := pgtest.NewPrivateServer(t)
	db := srv.NewDB(t)
	pub := started(t, db, "inst-pub", nil)
	sub := started(t, db, "inst-sub", &Config{ReconnectMaxDelay: 200 * time.Millisecond})
	var resyncs atomic.Int64
	got := &inbox{}
	_, err := sub.Subscribe(ctx, "ch", got.handle, &SubscribeOpts{OnResync: func(context.Context) { resyncs.Add(1) }})
	require.NoError(t, err)

	require.NoError(t, pub.Publish(ctx, "ch", "before", nil))
	got.waitPayload(t, `"before"`)
	require.NoError(t, srv.Restart(ctx))

	// The server answers when Restart returns; the pool drops each broken
	// connection as it fails, so a Publish succeeds once the pool's (at
	// most 6) connections from before the restart are gone.
	for attempt := 1; ; attempt++ {
		err := pub.Publish(ctx, "ch", "after-restart", nil)
		if err == nil {
			break
		}
		require.Lessf(t, attempt, 8, "publish after the restart: %v", err)
	}
	got.waitPayload(t, `"after-restart"`)
	waitState(t, sub, waitFor, sub.Healthy)
	barrier(t, pub, got, "ch")
	require.Equal(t, []string{`"before"`, `"after-restart"`}, got.nonBarrier())
	require.Positive(t, sub.Stats().Reconnects)
	require.Positive(t, resyncs.Load())
}
