package queue_test

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/queue"
)

const waitFor = 20 * time.Second

// open is every test's opening: it runs t in parallel and gives it its own
// database.
func open(t *testing.T) *pgtest.DB {
	t.Helper()
	t.Parallel()
	return pgtest.NewDB(t)
}

// openQueue is open plus an EventQueue with the default Config on the
// database's pool, not started.
func openQueue(t *testing.T) (*pgtest.DB, *queue.EventQueue) {
	t.Helper()
	db := open(t)
	return db, newQueue(t, db, nil, nil)
}

// newQueue starts an EventQueue on pool (db.Pool when nil), stopped at cleanup.
func newQueue(t *testing.T, db *pgtest.DB, pool *pgxpool.Pool, cfg *queue.Config) *queue.EventQueue {
	t.Helper()
	if pool == nil {
		pool = db.Pool
	}
	var c queue.Config
	if cfg != nil {
		c = *cfg
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		if testing.Verbose() {
			c.Logger = slog.New(slog.NewTextHandler(&testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
		}
	}
	q, err := queue.New(pool, &c)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = q.Stop(ctx)
	})
	return q
}

func start(t *testing.T, q *queue.EventQueue) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, q.Start(ctx))
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// jobState reads a message's River state and attempt.
func jobState(t *testing.T, db *pgtest.DB, id int64) (state string, attempt int, errs int) {
	t.Helper()
	state, attempt, errs, err := readJobState(ctxT(t), db, id)
	require.NoError(t, err)
	return state, attempt, errs
}

func readJobState(ctx context.Context, db *pgtest.DB, id int64) (state string, attempt int, errs int, err error) {
	err = db.Pool.QueryRow(ctx, `SELECT state::text, attempt, coalesce(cardinality(errors), 0) FROM pgcoord.river_job WHERE id = $1`, id).Scan(&state, &attempt, &errs)
	return
}

// requireQueued asserts that message id waits, unclaimed and uncharged.
func requireQueued(t *testing.T, db *pgtest.DB, id int64) {
	t.Helper()
	s, attempt, _ := jobState(t, db, id)
	require.Equal(t, "available", s)
	require.Equal(t, 0, attempt)
}

// countJobs counts the messages stored in the database.
func countJobs(t *testing.T, db *pgtest.DB) int {
	t.Helper()
	var n int
	require.NoError(t, db.Pool.QueryRow(ctxT(t), `SELECT count(*) FROM pgcoord.river_job`).Scan(&n))
	return n
}

// waitState waits until message id is in state.
func waitState(t *testing.T, db *pgtest.DB, id int64, state string) {
	t.Helper()
	require.Eventually(t, func() bool { s, _, _ := jobState(t, db, id); return s == state }, waitFor, 10*time.Millisecond, "message %d never reached %s", id, state)
}

// enter counts one more running Process in active and raises peak to it; the
// returned func counts it out.
func enter(active, peak *atomic.Int32) func() {
	n := active.Add(1)
	for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
	}
	return func() { active.Add(-1) }
}

// counting is a consumer (Concurrency 1) that counts its calls in calls.
func counting(calls *atomic.Int32) queue.Consumer {
	return queue.Consumer{Process: func(context.Context, queue.Message) error { calls.Add(1); return nil }}
}

// requireProcessedOnce waits until message id completed and checks that
// Process ran once.
func requireProcessedOnce(t *testing.T, db *pgtest.DB, id int64, calls *atomic.Int32) {
	t.Helper()
	waitState(t, db, id, "completed")
	require.Equal(t, int32(1), calls.Load())
}

// publish publishes payload to channel on q and returns the message's id.
func publish(t *testing.T, q *queue.EventQueue, channel string, payload any, opts *queue.PublishOpts) int64 {
	t.Helper()
	id, err := q.Publish(ctxT(t), channel, payload, opts)
	require.NoError(t, err)
	return id
}
