package queue_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/queue"
)

const (
	helperURLEnv      = "PGCOORD_QUEUE_CRASH_HELPER_URL"
	crashTimeout      = time.Second
	crashRescueAfter  = 2 * time.Second
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
	q, err := queue.New(pool, &queue.Config{InstanceID: "crash-child", DefaultTimeout: crashTimeout, RescueAfter: crashRescueAfter})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	hang := make(chan struct{})
	err = q.Subscribe(crashChannel, queue.Consumer{Concurrency: 1, Process: func(_ context.Context, m queue.Message) error {
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

// A worker process killed with SIGKILL mid-message: after RescueAfter the
// message is completed by another instance, and the lost attempt is not
// counted as a failure (Retried stays 0 although MaxRetries is 0).
func TestCrashedWorkerMessageIsRescued(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := ctxT(t)

	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), helperURLEnv+"="+db.URL)
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, child.Start())
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })

	pub := newQueue(t, db, nil, nil)
	id, err := pub.Publish(ctx, crashChannel, "important", &queue.PublishOpts{Timeout: crashTimeout})
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
	require.NoError(t, child.Process.Signal(os.Kill))
	_ = child.Wait()
	s, attempt, _ := jobState(t, db, id)
	require.Equal(t, "running", s)
	require.Equal(t, 1, attempt)

	// The survivor starts after the crash; it becomes leader once the dead
	// child's lease expires, and its rescuer hands the message back.
	got := make(chan queue.Message, 1)
	survivor := newQueue(t, db, nil, &queue.Config{InstanceID: "survivor", DefaultTimeout: crashTimeout, RescueAfter: crashRescueAfter, RetryBackoff: 10 * time.Millisecond})
	require.NoError(t, survivor.Subscribe(crashChannel, queue.Consumer{Concurrency: 1, PollInterval: 100 * time.Millisecond, Process: func(_ context.Context, m queue.Message) error {
		got <- m
		return nil
	}}))
	start(t, survivor)
	select {
	case m := <-got:
		require.Equal(t, id, m.ID)
		require.Equal(t, 0, m.Retried)
		require.JSONEq(t, `"important"`, string(m.Payload))
	case <-time.After(90 * time.Second):
		t.Fatal("the crashed worker's message was never rescued")
	}
	waitState(t, db, id, "completed")
	var by []string
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT attempted_by FROM pgcoord.river_job WHERE id = $1`, id).Scan(&by))
	require.Equal(t, []string{"crash-child", "survivor"}, by)
}
