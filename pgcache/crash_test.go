package pgcache_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/pgcache"
)

const (
	envHelperRole = "PGCACHE_HELPER_ROLE"
	envHelperURL  = "PGCACHE_HELPER_URL"
)

// TestHelperProcess is the child process of the crash tests; it does nothing
// in a normal run.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(envHelperRole) != "wrap-and-hang" {
		t.Skip("helper process only")
	}
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv(envHelperURL))
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	m, err := pgcache.NewManager(pool, &pgcache.ManagerConfig{AppName: "app"})
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	c, err := m.CreateCache(ctx, pgcache.CacheConfig{Name: "c", ClusterSingleFlight: true})
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	_, err = c.Wrap(ctx, "k", func(context.Context) (any, error) {
		fmt.Println("LOADING") // the advisory lock is held now
		select {}              // hang until SIGKILL
	}, 0)
	fmt.Println("ERROR", err)
	os.Exit(1)
}

// A process killed by SIGKILL while it runs a ClusterSingleFlight loader
// releases the key at once (its session ends): another instance's Wrap then
// runs its own loader.
func TestClusterSingleFlightHolderKilled(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), envHelperRole+"=wrap-and-hang", envHelperURL+"="+db.URL,
		pgtest.EnvDatabaseURL+"="+db.URL)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	select {
	case l := <-lines:
		require.Equal(t, "LOADING", strings.TrimSpace(l))
	case <-time.After(60 * time.Second):
		t.Fatal("helper never started loading")
	}

	m := newManager(t, db.Pool, &pgcache.ManagerConfig{AppName: "app"})
	c := newCache(t, m, pgcache.CacheConfig{Name: "c", ClusterSingleFlight: true})
	var loaded atomic.Bool
	done := make(chan error, 1)
	go func() {
		v, err := pgcache.Wrap(ctx, c, "k", func(context.Context) (string, error) {
			loaded.Store(true)
			return "from-survivor", nil
		}, 0)
		if err == nil && v != "from-survivor" {
			err = fmt.Errorf("got %q", v)
		}
		done <- err
	}()
	// The survivor waits for the helper's lock while the helper lives.
	waitSignal(t, c.StatsChanged, func() bool { return c.Stats().ClusterWaits == 1 }, "the survivor waits for the lock")
	require.False(t, loaded.Load())

	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	killed = true
	for range lines {
	}
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(waitFor):
		t.Fatal("survivor's Wrap never finished")
	}
	require.True(t, loaded.Load())
}
