package listen

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
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
