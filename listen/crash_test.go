package listen

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/faultproxy"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

const (
	envHelperRole = "PGCOORD_LISTEN_HELPER"
	envHelperURL  = "PGCOORD_LISTEN_HELPER_URL"
)

// TestHelperProcess is the child process of TestPublisherKilled; it does
// nothing in a normal run.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(envHelperRole) != "publisher" {
		t.Skip("helper process only")
	}
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(os.Getenv(envHelperURL))
	require.NoError(t, err)
	cfg.ConnConfig.RuntimeParams["application_name"] = "crash-child"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	ps, err := New(pool, &Config{AppName: "app", InstanceID: "child", Logger: quietLogger()})
	require.NoError(t, err)
	require.NoError(t, ps.Start(ctx))
	require.NoError(t, ps.Publish(ctx, "ch", "committed", nil))
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, ps.PublishTx(ctx, tx, "ch", "uncommitted", nil))
	fmt.Println("READY")
	select {} // wait for SIGKILL
}

// TestPublisherKilled: a publisher process killed by SIGKILL in the middle
// of a transaction delivers what it committed, once, and nothing of the
// transaction; the other instances carry on.
func TestPublisherKilled(t *testing.T) {
	ctx, db := setup(t)
	sub := started(t, db, "inst-sub", nil)
	got := subscribe(t, sub, "ch", nil)

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envHelperRole+"=publisher", envHelperURL+"="+db.URL)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		ok := false
		for sc.Scan() {
			if strings.Contains(sc.Text(), "READY") {
				ok = true
				break
			}
		}
		ready <- ok
		for sc.Scan() { // drain until the pipe closes
		}
	}()
	select {
	case ok := <-ready:
		require.True(t, ok, "helper exited before READY")
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("helper not ready")
	}
	require.NoError(t, cmd.Process.Kill()) // SIGKILL
	_ = cmd.Wait()

	got.waitPayload(t, `"committed"`)
	// The server aborts the killed session's transaction.
	require.Eventually(t, func() bool {
		var n int
		err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'crash-child'`).Scan(&n)
		return err == nil && n == 0
	}, waitFor, 10*time.Millisecond)
	other := started(t, db, "inst-other", nil)
	barrier(t, other, got, "ch")
	require.Equal(t, []string{`"committed"`}, got.nonBarrier())
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pgcoord.messages WHERE payload::text = '"uncommitted"'`).Scan(&n))
	require.Zero(t, n)
}

// TestServerCrashAsyncPublishWindow crashes PostgreSQL (an immediate
// shutdown: WAL still in its buffers is lost) right after a burst of
// autocommit Publishes that both listeners delivered and read past. The
// crash may lose the tail of the burst (Publish commits with
// synchronous_commit off), and the server then hands out the lost
// transaction ids and message ids again. The listeners reconnect only after
// the restarted server has run past their watermark again (as a busy server
// does), and still: every message published after the restart reaches each
// of them exactly once, PublishTx messages (synchronous commit) survive, and
// when commits were lost the listeners say so (Stats.Switchovers).
func TestServerCrashAsyncPublishWindow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := pgtest.NewDurablePrivateServer(t)
	db := srv.NewDB(t)
	admin := db.NewPool(t, &pgtest.PoolOptions{AppName: "admin", MaxConns: 2})
	// The WAL writer waits its longest, so the burst's tail (autocommit
	// Publishes commit with synchronous_commit off) stays in the WAL
	// buffers until the crash.
	_, err := admin.Exec(ctx, `ALTER SYSTEM SET wal_writer_delay = '10s'`)
	require.NoError(t, err)
	_, err = admin.Exec(ctx, `SELECT pg_reload_conf()`)
	require.NoError(t, err)

	pub := started(t, db, "inst-pub", &Config{PruneInterval: -1})
	proxy, url := faultproxy.StartFor(t, db.URL)
	subs := make([]*PubSub, 2)
	got := make([]*inbox, 2)
	for i := range subs {
		name := fmt.Sprintf("inst-sub%d", i)
		subs[i] = psWith(t, poolFor(t, url, name), Config{InstanceID: name, PruneInterval: -1, ReconnectMaxDelay: 200 * time.Millisecond})
		got[i] = subscribe(t, subs[i], "ch", nil)
		require.NoError(t, subs[i].Start(ctx))
	}

	publishTx := func(payload string) {
		t.Helper()
		require.NoError(t, pgx.BeginFunc(ctx, pub.pool, func(tx pgx.Tx) error {
			return pub.PublishTx(ctx, tx, "ch", payload, nil)
		}))
	}
	publishTx("tx-before")
	const burst = 60
	for i := range burst {
		require.NoError(t, pub.Publish(ctx, "ch", fmt.Sprintf("burst-%d", i), nil))
	}
	var maxXid uint64
	var maxID int64
	// max over xid8 exists only from PostgreSQL 16: compare as bigint.
	require.NoError(t, admin.QueryRow(ctx, `SELECT max(xid::text::bigint), max(id) FROM pgcoord.messages`).Scan(&maxXid, &maxID))
	for i, sub := range subs {
		got[i].waitPayload(t, fmt.Sprintf(`"burst-%d"`, burst-1))
		waitState(t, sub, waitFor, func() bool { return sub.led.snapEnded(maxXid) }, "the listener reads past the burst")
	}

	// The listeners cannot reconnect until the restarted server has run
	// past their watermark.
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, refused.Close())
	proxy.SetTarget(refused.Addr().String())
	require.NoError(t, srv.Crash(ctx))
	require.NoError(t, srv.Start(ctx))
	admin.Reset()
	pub.pool.Reset()

	var nextXid uint64
	var survived int
	require.NoError(t, admin.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint, (SELECT count(*) FROM pgcoord.messages WHERE payload::text LIKE '"burst-%')`).Scan(&nextXid, &survived))
	wentBack := nextXid <= maxXid
	t.Logf("crash: %d of %d burst messages survived; next xid %d, highest before the crash %d", survived, burst, nextXid, maxXid)

	const after = 2 * burst
	var want []string
	for i := range after {
		p := fmt.Sprintf("after-%d", i)
		require.NoError(t, pub.Publish(ctx, "ch", p, nil))
		want = append(want, `"`+p+`"`)
	}
	publishTx("tx-after")
	want = append(want, `"tx-after"`)
	hostPort, err := faultproxy.HostPort(db.URL)
	require.NoError(t, err)
	proxy.SetTarget(hostPort)

	for i, sub := range subs {
		got[i].waitPayload(t, `"tx-after"`)
		waitState(t, sub, switchoverWait, sub.Healthy)
		barrier(t, pub, got[i], "ch")
		var afterRestart []string
		count := map[string]int{}
		for _, p := range got[i].nonBarrier() {
			count[p]++
			if strings.HasPrefix(p, `"after-`) || p == `"tx-after"` {
				afterRestart = append(afterRestart, p)
			}
		}
		var notOnce []string
		for _, p := range want {
			if count[p] != 1 {
				notOnce = append(notOnce, fmt.Sprintf("%s ×%d", p, count[p]))
			}
		}
		require.Empty(t, notOnce, "%s: every message published after the restart arrives once", sub.InstanceID())
		require.Equal(t, want, afterRestart, "%s: in order", sub.InstanceID())
		switchovers := sub.Stats().Switchovers
		if wentBack {
			require.Positive(t, switchovers, "%s: the ids went back: the listener says commits were lost", sub.InstanceID())
		}
		if switchovers == 0 {
			require.Equal(t, 1, count[`"tx-before"`], sub.InstanceID())
		} else { // recent messages may come twice then
			require.Positive(t, count[`"tx-before"`], sub.InstanceID())
		}
	}
	var n int
	require.NoError(t, admin.QueryRow(ctx, `SELECT count(*) FROM pgcoord.messages WHERE payload::text IN ('"tx-before"', '"tx-after"')`).Scan(&n))
	require.Equal(t, 2, n, "PublishTx messages are durable")
}
