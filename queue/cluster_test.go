package queue_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/queue"
)

// 3 instances × Concurrency 4 consume 1,000 messages: each is processed
// exactly once (no retries configured, no failures injected).
func TestClusterProcessesEachMessageExactlyOnce(t *testing.T) {
	t.Parallel()
	const n, instances = 1000, 3
	db := pgtest.NewDB(t)

	var mu sync.Mutex
	calls := make(map[int64]int, n)
	byInstance := make(map[string]int)
	done := make(chan struct{})
	total := 0
	qs := make([]*queue.EventQueue, instances)
	for i := range qs {
		name := fmt.Sprintf("inst-%d", i)
		q := newQueue(t, db, db.NewPool(t, &pgtest.PoolOptions{AppName: name, MaxConns: 8}), &queue.Config{InstanceID: name})
		require.NoError(t, q.Subscribe(ctxT(t), "work", queue.Consumer{Concurrency: 4, Process: func(_ context.Context, m queue.Message) error {
			mu.Lock()
			defer mu.Unlock()
			calls[m.ID]++
			byInstance[name]++
			total++
			if total == n {
				close(done)
			}
			return nil
		}}))
		qs[i] = q
	}

	pubs := make([]queue.Publication, 0, n)
	for i := range n {
		pubs = append(pubs, queue.Publication{Channel: "work", Payload: i})
	}
	ids, err := qs[0].PublishMany(ctxT(t), pubs)
	require.NoError(t, err)
	require.Len(t, ids, n)
	// River sends a completion event once the completed state is written.
	completed := make(chan *river.Event, n)
	for _, q := range qs {
		events, unsubscribe := q.JobEvents(river.EventKindJobCompleted)
		t.Cleanup(unsubscribe)
		go func() {
			for e := range events {
				completed <- e
			}
		}()
		start(t, q)
	}
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("not all messages were processed")
	}
	for range n {
		receive(t, completed)
	}
	var written int
	require.NoError(t, db.Pool.QueryRow(ctxT(t), `SELECT count(*) FROM pgcoord.river_job WHERE state = 'completed'`).Scan(&written))
	require.Equal(t, n, written)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, calls, n)
	for _, id := range ids {
		require.Equal(t, 1, calls[id], "message %d", id)
	}
	var attempts int
	require.NoError(t, db.Pool.QueryRow(ctxT(t), `SELECT sum(attempt) FROM pgcoord.river_job`).Scan(&attempts))
	require.Equal(t, n, attempts)
	t.Logf("messages per instance: %v", byInstance)
}
