package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// goTool finds the go command that runs this test.
func goTool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if goroot := os.Getenv("GOROOT"); goroot != "" {
		return filepath.Join(goroot, "bin", "go")
	}
	t.Skip("the go command is needed to build pgcoord for the demo test")
	return ""
}

// buildPgcoord builds this command into a temporary directory.
func buildPgcoord(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pgcoord")
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	out, err := exec.Command(goTool(t), "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// The demo runs end to end as a user runs it: the pgcoord binary, three node
// processes, a real database.
// One build serves both subtests.
func TestDemo(t *testing.T) {
	t.Parallel()
	bin := buildPgcoord(t)
	t.Run("end to end", func(t *testing.T) {
		t.Parallel()
		testDemoEndToEnd(t, bin)
	})
	t.Run("nodes exit when the demo is killed", func(t *testing.T) {
		t.Parallel()
		testDemoNodesExitWhenDemoIsKilled(t, bin)
	})
}

func testDemoEndToEnd(t *testing.T, bin string) {
	db := pgtest.NewDB(t)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "demo")
	cmd.Env = append(os.Environ(), "PGCOORD_DATABASE_URL="+db.URL, "PGCOORD_SCHEMA=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	require.NoError(t, err, "demo failed\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	got := stdout.String()
	t.Logf("demo output:\n%s", got)

	for _, want := range []string{
		"== 1. authcache", "== 2. schemasync", "== 3. asynctasks", "== 4. fielddestroy", "== Summary ==",
		"cache hits", "cache misses", "sync messages delivered", "tasks run", "lock waits",
		"cancelled task: ", "final status CANCELED",
		"[node-1]", "[node-2]", "[node-3]",
		"all four scenarios behaved as expected",
		"nodes stopped, demo schema and data removed",
	} {
		require.Contains(t, got, want)
	}
	require.Regexp(t, `\[node-\d\] cancelled task \d+ \(requested by node-\d\)`, got)

	// Nothing of the demo is left in the database.
	var schemas int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'pgcoord_demo_%'`).Scan(&schemas))
	require.Zero(t, schemas, "the demo schema was dropped")
	var entries int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pgcoord.cache_entries WHERE app LIKE 'demo-%'`).Scan(&entries))
	require.Zero(t, entries)
	// Every node process exited: the demo waited for them; none is still connected.
	var sessions int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() AND application_name <> 'pgcoord-test'`, db.Name).Scan(&sessions))
	require.Zero(t, sessions, "no node process is still connected")
}

func TestDemoUsage(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	require.Zero(t, run(context.Background(), []string{"demo", "--help"}, &out, &errOut))
	require.Contains(t, errOut.String(), "Usage: pgcoord demo")
	errOut.Reset()
	require.Equal(t, 2, run(context.Background(), []string{"demo", "extra"}, &out, &errOut))

	// A node needs a database; it says how to give it one.
	out.Reset()
	errOut.Reset()
	require.Equal(t, 1, run(context.Background(), []string{"node", "--instance", "1", "--database-url", ""}, &out, &errOut))
	require.Contains(t, errOut.String(), "PGCOORD_DATABASE_URL")
}

// When the demo itself is killed (SIGKILL: no cleanup runs), its node
// processes notice their closed stdin, stop, and leave the database.
func testDemoNodesExitWhenDemoIsKilled(t *testing.T, bin string) {
	db := pgtest.NewDB(t)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "demo")
	cmd.Env = append(os.Environ(), "PGCOORD_DATABASE_URL="+db.URL, "PGCOORD_SCHEMA=")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	sc := bufio.NewScanner(stdout)
	started := false
	for !started && sc.Scan() {
		started = strings.HasPrefix(sc.Text(), "all 3 instances started")
	}
	require.True(t, started, "the demo started its nodes")
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()

	sessions := func() int {
		var n int
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() AND application_name <> 'pgcoord-test'`, db.Name).Scan(&n))
		return n
	}
	require.Eventually(t, func() bool { return sessions() == 0 }, time.Minute, 50*time.Millisecond,
		"the orphaned nodes stopped and closed their connections")
}
