package advisorylock_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/advisorylock"
)

// The test binary re-executes itself as a lock holder when helperEnv is set.
const (
	helperEnv    = "ADVISORYLOCK_TEST_HELPER"
	helperURLEnv = "ADVISORYLOCK_TEST_HELPER_URL"
	helperKeyEnv = "ADVISORYLOCK_TEST_HELPER_KEY"
)

// runHelper is the child process: it takes a lock with a one-hour TTL,
// reports "held <token>" on stdout, and waits to be killed.
func runHelper() {
	ctx := context.Background()
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(3)
	}
	pool, err := pgxpool.New(ctx, os.Getenv(helperURLEnv))
	if err != nil {
		fail(err)
	}
	m, err := advisorylock.New(pool, &advisorylock.Config{InstanceID: "child", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		fail(err)
	}
	if err := m.Start(ctx); err != nil {
		fail(err)
	}
	l, err := m.Acquire(ctx, os.Getenv(helperKeyEnv), time.Hour)
	if err != nil {
		fail(err)
	}
	fmt.Printf("held %d\n", l.Token())
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent goes away; SIGKILL comes first
	os.Exit(0)
}

// A holder process killed with SIGKILL releases its lock at once: a waiter
// in another process gets it while the dead holder's lease still had most
// of its hour to run.
func TestHolderProcessKilledReleasesAtOnce(t *testing.T) {
	ctx, db := setup(t)
	waiter := instance(t, db, "waiter", nil)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=holder", helperURLEnv+"="+db.URL, helperKeyEnv+"=crash-key")
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(line, "held "), line)
	childToken, err := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(line, "held ")), 10, 64)
	require.NoError(t, err)

	var oldExpires time.Time
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT expires_at FROM pgcoord.locks WHERE key = 'crash-key'`).Scan(&oldExpires))

	got := acquireAsync(t, ctx, waiter, "crash-key", time.Minute)
	waitContended(t, waiter, 1)
	require.Empty(t, got)

	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	killed = true
	_ = cmd.Wait()

	l := <-got
	require.NotNil(t, l)
	require.Greater(t, l.Token(), childToken)
	var stillValid bool
	var takenFrom string
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT now() < $1, taken_from FROM pgcoord.locks WHERE key = 'crash-key'`, oldExpires).Scan(&stillValid, &takenFrom))
	require.True(t, stillValid, "the waiter got the lock while the dead holder's lease had not expired")
	require.Equal(t, "child", takenFrom)
	require.EqualValues(t, 1, waiter.Stats().ExpiredTakeovers)
	require.NoError(t, l.Release(ctx))
}
