package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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

// testDemoEndToEnd runs `pgcoord demo --dashboard`: the dashboard answers
// while the demo runs and after it, the four scenarios pass, and an interrupt
// shuts the dashboard down with exit code 0 and nothing of the demo left.
func testDemoEndToEnd(t *testing.T, bin string) {
	db := pgtest.NewDB(t)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "demo", "--dashboard", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "PGCOORD_DATABASE_URL="+db.URL, "PGCOORD_SCHEMA=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	lines := make(chan string)
	var all strings.Builder // every stdout line, read once lines is closed
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			all.WriteString(sc.Text() + "\n")
			lines <- sc.Text()
		}
	}()
	// await returns the first line matching re; the demo must print it.
	await := func(re *regexp.Regexp) []string {
		t.Helper()
		for line := range lines {
			if m := re.FindStringSubmatch(line); m != nil {
				return m
			}
		}
		_ = cmd.Wait()
		t.Fatalf("the demo ended before printing %q\nstdout:\n%s\nstderr:\n%s", re, all.String(), stderr.String())
		return nil
	}
	url := await(regexp.MustCompile(`pgcoord dashboard: (http://\S+/)`))[1]
	requireDashboardAnswers(t, url)
	await(regexp.MustCompile(`the dashboard stays open until Ctrl-C`))
	requireDashboardAnswers(t, url)
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	for range lines {
	}
	require.NoError(t, cmd.Wait(), "demo failed\nstdout:\n%s\nstderr:\n%s", all.String(), stderr.String())
	got := all.String()
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
	// Every node process exited and the dashboard closed its pool: none is still connected.
	var sessions int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() AND application_name <> 'pgcoord-test'`, db.Name).Scan(&sessions))
	require.Zero(t, sessions, "no node process is still connected")
}

// requireDashboardAnswers gets the dashboard's Cluster page.
func requireDashboardAnswers(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Get(url + "cluster")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.Contains(t, string(body), "Schema version")
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
