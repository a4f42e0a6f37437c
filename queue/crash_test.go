package queue_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/otelxtest"
	"github.com/pgcoord/pgcoord/queue"
)

const (
	helperURLEnv      = "PGCOORD_QUEUE_CRASH_HELPER_URL"
	crashTimeout      = time.Second
	crashChannel      = "crash"
	crashHelperPrefix = "claimed "
)

// runCrashHelper is a child instance: it consumes crashChannel, prints the id
// of the message it claimed, and hangs in Process (ignoring its ctx) until
// the parent kills it with SIGKILL.
func runCrashHelper() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv(helperURLEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	q, err := queue.New(pool, &queue.Config{InstanceID: "crash-child", DefaultTimeout: crashTimeout})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	hang := make(chan struct{})
	err = q.Subscribe(ctx, crashChannel, queue.Consumer{Concurrency: 1, Process: func(_ context.Context, m queue.Message) error {
		fmt.Printf("%s%d\n", crashHelperPrefix, m.ID)
		<-hang
		return nil
	}})
	if err == nil {
		err = q.Start(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	<-hang
}

// A worker process killed with SIGKILL mid-message: its liveness session
// ends with it, and a survivor that was running all along reruns the
// message within seconds (the liveness bound, not an age), and the lost
// attempt is not counted as a failure (Retried stays 0 although MaxRetries
// is 0). The time from SIGKILL to the rerun's start is logged.
func TestCrashedWorkerMessageIsRescued(t *testing.T) {
	db, ctx := open(t), ctxT(t)

	// The survivor runs before the crash but takes nothing until the child
	// has claimed the message.
	var childClaimed atomic.Bool
	got := make(chan queue.Message, 1)
	var rerunAt atomic.Int64
	metrics := otelxtest.NewMetrics(t)
	survivor := newQueue(t, db, nil, &queue.Config{InstanceID: "survivor", DefaultTimeout: crashTimeout, MeterProvider: metrics.Provider})
	require.NoError(t, survivor.Subscribe(ctx, crashChannel, queue.Consumer{Concurrency: 1, Idle: childClaimed.Load, Process: func(_ context.Context, m queue.Message) error {
		rerunAt.CompareAndSwap(0, time.Now().UnixNano())
		got <- m
		return nil
	}}))
	start(t, survivor)

	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), helperURLEnv+"="+db.URL)
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, child.Start())
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })

	id, err := survivor.Publish(ctx, crashChannel, "important", &queue.PublishOpts{Timeout: crashTimeout})
	require.NoError(t, err)

	claimed := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, crashHelperPrefix) {
				claimed <- strings.TrimPrefix(line, crashHelperPrefix)
				return
			}
		}
		close(claimed)
	}()
	select {
	case got, ok := <-claimed:
		require.True(t, ok, "child exited before claiming")
		require.Equal(t, strconv.FormatInt(id, 10), got)
	case <-time.After(time.Minute):
		t.Fatal("child never claimed the message")
	}
	childClaimed.Store(true)
	killedAt := time.Now()
	require.NoError(t, child.Process.Signal(os.Kill))
	_ = child.Wait()

	select {
	case m := <-got:
		require.Equal(t, id, m.ID)
		require.Equal(t, 0, m.Retried)
		require.JSONEq(t, `"important"`, string(m.Payload))
	case <-time.After(waitFor):
		t.Fatal("the crashed worker's message was not rerun within the liveness bound")
	}
	t.Logf("SIGKILL -> rerun started: %s", time.Duration(rerunAt.Load()-killedAt.UnixNano()).Round(time.Millisecond))
	waitState(t, db, id, "completed")
	var by []string
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT attempted_by FROM pgcoord.river_job WHERE id = $1`, id).Scan(&by))
	require.Equal(t, []string{"crash-child", "survivor"}, by)
	// The rescuer (the survivor, the only instance left) counts the message
	// it handed back just after its write, before that scan ends: by the end
	// of the scan running now (or of the next one) it is counted.
	_, scanned := survivor.Scanned()
	receive(t, scanned)
	require.Equal(t, int64(1), metrics.Value(t, "pgcoord.queue.rescued"))
}
