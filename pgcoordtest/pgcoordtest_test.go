package pgcoordtest_test

import (
	"context"
	"runtime"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/pgcoordtest"
)

func TestNewDBIsMigratedAndIsolated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b := pgcoordtest.NewDB(t), pgcoordtest.NewDB(t)
	require.NotEqual(t, a.Name, b.Name)
	for _, db := range []*pgcoordtest.DB{a, b} {
		var tables int
		require.NoError(t, db.Pool.QueryRow(ctx,
			`SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename IN ('messages', 'cache_entries', 'locks', 'river_job')`,
			db.Schema).Scan(&tables))
		require.Equal(t, 4, tables, "pgcoord's tables in %s", db.Name)
	}
	_, err := a.Pool.Exec(ctx, `CREATE TABLE only_in_a (id int)`)
	require.NoError(t, err)
	var n int
	require.NoError(t, b.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'`).Scan(&n))
	require.Zero(t, n)
}

// sessions returns the backend pids of one application_name in db.
func sessions(t *testing.T, db *pgcoordtest.DB, applicationName string) map[int]bool {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(),
		`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1`, applicationName)
	require.NoError(t, err)
	pids := map[int]bool{}
	for rows.Next() {
		var pid int
		require.NoError(t, rows.Scan(&pid))
		pids[pid] = true
	}
	require.NoError(t, rows.Err())
	return pids
}

// TestCutEndsOneInstanceOnly cuts instance 1's sessions: instance 0's
// survive, and instance 1 reconnects and receives what instance 0 publishes.
func TestCutEndsOneInstanceOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgcoordtest.NewDB(t)
	c := pgcoordtest.StartCluster(t, db, 2, nil)
	require.Equal(t, 2, c.Len())

	got := make(chan listen.Message, 4)
	_, err := c.App(1).PubSub().Subscribe(ctx, "ping", func(_ context.Context, m listen.Message) error {
		got <- m
		return nil
	}, nil)
	require.NoError(t, err)

	kept := sessions(t, db, c.Instance(0).ApplicationName)
	require.NotEmpty(t, kept, "instance 0 has sessions")
	cut := sessions(t, db, c.Instance(1).ApplicationName)
	require.NotEmpty(t, cut, "instance 1 has sessions")

	n, err := c.Instance(1).Cut(ctx)
	require.NoError(t, err)
	require.Equal(t, len(cut), n)
	for pid := range kept {
		require.True(t, sessions(t, db, c.Instance(0).ApplicationName)[pid], "instance 0's session %d survived", pid)
	}

	pgcoordtest.WaitFor(t, "instance 1's listener to reconnect", func(context.Context) (bool, error) {
		return c.App(1).PubSub().Healthy(), nil
	})
	require.NoError(t, c.App(0).PubSub().Publish(ctx, "ping", "after the cut", nil))
	require.JSONEq(t, `"after the cut"`, string(pgcoordtest.Receive(t, got).Payload))
}

// fatalTB records Fatalf and ends the calling goroutine, as testing.T does.
type fatalTB struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.msg = format
	f.mu.Unlock()
	runtime.Goexit()
}

func TestWaitForFailsOnConditionError(t *testing.T) {
	t.Parallel()
	ftb := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		pgcoordtest.WaitFor(ftb, "a broken condition", func(context.Context) (bool, error) {
			return false, context.Canceled
		})
	}()
	<-done
	ftb.mu.Lock()
	defer ftb.mu.Unlock()
	require.Contains(t, ftb.msg, "waiting for")
}

func TestReceiveFailsOnClosedChannel(t *testing.T) {
	t.Parallel()
	ftb := &fatalTB{TB: t}
	ch := make(chan int)
	close(ch)
	done := make(chan struct{})
	go func() {
		defer close(done)
		pgcoordtest.Receive(ftb, ch)
	}()
	<-done
	ftb.mu.Lock()
	defer ftb.mu.Unlock()
	require.Contains(t, ftb.msg, "closed")
}
