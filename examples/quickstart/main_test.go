package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// instance is a running copy of the quickstart whose log lines arrive on lines.
type instance struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan error
}

func startInstance(t *testing.T, ctx context.Context, bin, dbURL, id string) *instance {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(os.Environ(), "PGCOORD_DATABASE_URL="+dbURL, "PGCOORD_INSTANCE_ID="+id, "PGCOORD_APP_NAME=quickstart", "PGCOORD_SCHEMA=")
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	in := &instance{cmd: cmd, lines: make(chan string, 100), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case in.lines <- sc.Text():
			default: // the test reads what it needs; drop the rest
			}
		}
		in.done <- cmd.Wait()
	}()
	return in
}

// waitLine returns the first log line containing want.
func (in *instance) waitLine(t *testing.T, want string) string {
	t.Helper()
	deadline := time.After(time.Minute)
	for {
		select {
		case l := <-in.lines:
			if strings.Contains(l, want) {
				return l
			}
		case <-deadline:
			t.Fatalf("no log line containing %q", want)
		}
	}
}

func (in *instance) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, in.cmd.Process.Signal(os.Interrupt))
	select {
	case err := <-in.done:
		require.NoError(t, err, "quickstart exits cleanly on Ctrl-C")
	case <-time.After(time.Minute):
		t.Fatal("quickstart did not stop")
	}
}

// The README's example runs: two copies on one database, the second's
// greeting reaches the first through the cache and a sync message.
func TestQuickstartTwoInstances(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is needed to build the quickstart")
	}
	bin := filepath.Join(t.TempDir(), "quickstart")
	out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := startInstance(t, ctx, bin, db.URL, "inst-a")
	a.waitLine(t, "inst-a started")
	b := startInstance(t, ctx, bin, db.URL, "inst-b")
	b.waitLine(t, "inst-b started")
	line := a.waitLine(t, `"inst-b joined" (from inst-b)`)
	require.Contains(t, line, "cached greeting: hello from inst-b")
	b.stop(t)
	a.stop(t)
}
