package queue_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/queue"
)

// An instance whose clock runs an hour ahead decides nothing: it is the
// rescuer while another instance runs a message far longer than any age
// limit, and that message is never rerun; its delayed publication and its
// retry run on the database's time, not an hour late.
func TestSkewedClockDecidesNothing(t *testing.T) {
	db, ctx := open(t), ctxT(t)
	ahead := func() time.Time { return time.Now().Add(time.Hour) }

	// The skewed instance starts first and becomes the rescuer.
	var failedOnce atomic.Bool
	retried := make(chan struct{})
	skewed, err := queue.NewWithClock(db.NewPool(t, &pgtest.PoolOptions{AppName: "skewed"}), &queue.Config{
		InstanceID: "skewed", RetryBackoff: 50 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, ahead)
	require.NoError(t, err)
	t.Cleanup(func() { _ = skewed.Stop(context.Background()) })
	require.NoError(t, skewed.Subscribe(ctxT(t), "retry", queue.Consumer{Concurrency: 1, PollInterval: 100 * time.Millisecond, Process: func(context.Context, queue.Message) error {
		if failedOnce.CompareAndSwap(false, true) {
			return errors.New("first attempt fails")
		}
		close(retried)
		return nil
	}}))
	start(t, skewed)
	receive(t, skewed.Rescuing())

	started, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	delayed := make(chan struct{})
	healthy := newQueue(t, db, db.NewPool(t, &pgtest.PoolOptions{AppName: "healthy"}), &queue.Config{InstanceID: "healthy"})
	require.NoError(t, healthy.Subscribe(ctxT(t), "long", queue.Consumer{Concurrency: 1, Process: func(context.Context, queue.Message) error {
		calls.Add(1)
		close(started)
		<-release
		return nil
	}}))
	require.NoError(t, healthy.Subscribe(ctxT(t), "later", queue.Consumer{Concurrency: 1, PollInterval: 100 * time.Millisecond, Process: func(context.Context, queue.Message) error {
		close(delayed)
		return nil
	}}))
	start(t, healthy)

	// A retry scheduled by the skewed instance runs after RetryBackoff of
	// database time.
	_, err = skewed.Publish(ctx, "retry", 1, &queue.PublishOpts{MaxRetries: 1})
	require.NoError(t, err)
	select {
	case <-retried:
	case <-time.After(waitFor):
		t.Fatal("the skewed instance's retry did not run (scheduled on its clock?)")
	}

	// A Delay given on the skewed instance counts on the database's clock.
	_, err = skewed.Publish(ctx, "later", 1, &queue.PublishOpts{Delay: 100 * time.Millisecond})
	require.NoError(t, err)
	select {
	case <-delayed:
	case <-time.After(waitFor):
		t.Fatal("a message delayed 100 ms by the skewed instance did not run (scheduled on its clock?)")
	}

	// A live instance's message is never rescued, however long it runs and
	// however far the rescuer's clock is ahead.
	id, err := healthy.Publish(ctx, "long", 1, &queue.PublishOpts{Timeout: 50 * time.Millisecond})
	require.NoError(t, err)
	<-started
	waitScans(t, int64(queue.RescueGrace/queue.RescueScanInterval)+2, skewed, nil)
	s, attempt, errs := jobState(t, db, id)
	require.Equal(t, "running", s)
	require.Equal(t, 1, attempt)
	require.Equal(t, 0, errs)
	close(release)
	requireProcessedOnce(t, db, id, &calls)
}

// A cut connection or a server restart is no death: every session of the
// running instance ends while its message runs; its liveness session comes
// back within RescueGrace, so the message is never rerun elsewhere, and its
// outcome (written after the session changed) is still recorded.
func TestFaultDoesNotRescueLiveMessage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		db    func(t *testing.T) (*pgtest.DB, *pgtest.Server)
		fault func(ctx context.Context, db *pgtest.DB, srv *pgtest.Server) error
	}{
		{"connection cut", func(t *testing.T) (*pgtest.DB, *pgtest.Server) { return pgtest.NewDB(t), nil },
			func(ctx context.Context, db *pgtest.DB, _ *pgtest.Server) error {
				n, err := db.TerminateBackends(ctx, "runner")
				if err == nil && n == 0 {
					err = errors.New("no backend terminated")
				}
				return err
			}},
		{"server restart", func(t *testing.T) (*pgtest.DB, *pgtest.Server) {
			srv := pgtest.NewPrivateServer(t)
			return srv.NewDB(t), srv
		}, func(ctx context.Context, _ *pgtest.DB, srv *pgtest.Server) error { return srv.Restart(ctx) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db, srv := tc.db(t)
			ctx := ctxT(t)
			other := newQueue(t, db, db.NewPool(t, &pgtest.PoolOptions{AppName: "other"}), &queue.Config{InstanceID: "other"})
			require.NoError(t, other.Subscribe(ctx, "long", queue.Consumer{Idle: func() bool { return false }, Process: func(context.Context, queue.Message) error { return nil }}))
			start(t, other)
			receive(t, other.Rescuing())

			started, release := make(chan struct{}), make(chan struct{})
			var calls atomic.Int32
			runner := newQueue(t, db, db.NewPool(t, &pgtest.PoolOptions{AppName: "runner"}), &queue.Config{InstanceID: "runner"})
			require.NoError(t, runner.Subscribe(ctx, "long", queue.Consumer{Process: func(context.Context, queue.Message) error {
				calls.Add(1)
				close(started)
				<-release
				return nil
			}}))
			start(t, runner)
			id, err := runner.Publish(ctx, "long", 1, nil)
			require.NoError(t, err)
			<-started
			require.NoError(t, tc.fault(ctx, db, srv))
			// Either instance may be the rescuer after the fault: wait for
			// enough scans of the one that is (a private server's restart is
			// slow on a loaded machine: wait for it, not for a bound).
			need := int64(queue.RescueGrace/queue.RescueScanInterval) + 4
			waitScans(t, need, other, runner)
			require.Eventually(t, func() bool {
				s, attempt, errs, err := readJobState(ctx, db, id)
				if err != nil {
					return false // the pool is reconnecting
				}
				require.Equal(t, "running", s)
				require.Equal(t, 1, attempt)
				require.Equal(t, 0, errs)
				return true
			}, time.Minute, 20*time.Millisecond)
			close(release)
			requireProcessedOnce(t, db, id, &calls)
		})
	}
}

// waitScans waits until a and b (b may be nil) together ran need more
// rescue scans, signalled by each scan.
func waitScans(t *testing.T, need int64, a, b *queue.EventQueue) {
	t.Helper()
	scanned := func(q *queue.EventQueue) (int64, <-chan struct{}) {
		if q == nil {
			return 0, nil
		}
		return q.Scanned()
	}
	na, _ := scanned(a)
	nb, _ := scanned(b)
	target := na + nb + need
	deadline := time.After(time.Minute)
	for {
		na, ca := scanned(a)
		nb, cb := scanned(b)
		if na+nb >= target {
			return
		}
		select {
		case <-ca:
		case <-cb:
		case <-deadline:
			t.Fatal("rescue scans stalled")
		}
	}
}

// Rescue decides by the liveness of the instance id River records, so two
// running instances may not share one: the second Start is refused, and
// nothing is left running.
func TestDuplicateInstanceIDRefused(t *testing.T) {
	db := open(t)
	first := newQueue(t, db, nil, &queue.Config{InstanceID: "twin"})
	start(t, first)
	second := newQueue(t, db, nil, &queue.Config{InstanceID: "twin"})
	require.ErrorIs(t, second.Start(ctxT(t)), queue.ErrInstanceIDInUse)
	require.NoError(t, first.Stop(ctxT(t)))
	third := newQueue(t, db, nil, &queue.Config{InstanceID: "twin"})
	start(t, third)
}

// The rescuer reads River's job table only when an instance may have died
// (an advisory lock of the database was released since its last scan), while
// a candidate waits out RescueGrace, and every jobScanEvery scans: a quiet
// cluster costs one pg_locks read per RescueScanInterval, not a walk of the
// running messages that every claim and completion rewrites.
func TestRescueReadsJobsOnlyWhenAnInstanceMayHaveDied(t *testing.T) {
	db := open(t)
	a := newQueue(t, db, nil, nil)
	start(t, a)
	receive(t, a.Rescuing())
	waitScans(t, 1, a, nil)
	before := a.JobScans()
	waitScans(t, 8, a, nil)
	require.Less(t, a.JobScans()-before, int64(4), "8 scans with every instance alive")
}
