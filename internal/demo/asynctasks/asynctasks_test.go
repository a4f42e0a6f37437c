package asynctasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/demo/asynctasks"
	"github.com/pgcoord/pgcoord/internal/demo/demotest"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/txhooks"
)

// cluster is the shared test state of every instance's executor.
type cluster struct {
	mu       sync.Mutex
	runs     map[int64]int // executions per task id
	events   chan asynctasks.Event
	barrier  chan struct{} // closed when barrierN "barrier" tasks run at once
	waiting  atomic.Int64
	barrierN int64
	started  chan asynctasks.Task // "long" tasks, when they start
	ctxDone  chan int64           // "long" tasks whose ctx was cancelled
}

func newCluster(barrierN int64) *cluster {
	return &cluster{
		runs: map[int64]int{}, events: make(chan asynctasks.Event, 256), barrier: make(chan struct{}),
		barrierN: barrierN, started: make(chan asynctasks.Task, 8), ctxDone: make(chan int64, 8),
	}
}

func (c *cluster) execute(ctx context.Context, t asynctasks.Task) (any, error) {
	c.mu.Lock()
	c.runs[t.ID]++
	c.mu.Unlock()
	switch t.Type {
	case "barrier":
		if c.waiting.Add(1) == c.barrierN {
			close(c.barrier)
		}
		select {
		case <-c.barrier:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	case "long":
		c.started <- t
		<-ctx.Done()
		c.ctxDone <- t.ID
		return nil, ctx.Err()
	case "fail":
		return nil, errors.New("boom")
	}
	var params map[string]int
	_ = json.Unmarshal(t.Params, &params)
	return map[string]int{"double": 2 * params["n"]}, nil
}

func startInstances(t *testing.T, db *pgtest.DB, c *cluster, concurrency int) ([]*app.App, []*asynctasks.Plugin) {
	return startN(t, db, c, 3, concurrency)
}

func startN(t *testing.T, db *pgtest.DB, c *cluster, n, concurrency int) ([]*app.App, []*asynctasks.Plugin) {
	return demotest.Start(t, db, "taskdemo", n, func(string) (*asynctasks.Plugin, error) {
		return asynctasks.New(asynctasks.Config{
			Concurrency: concurrency, Execute: c.execute, Timeout: 30 * time.Second,
			OnEvent: func(e asynctasks.Event) { c.events <- e },
		})
	})
}

func waitStatus(t *testing.T, p *asynctasks.Plugin, id int64, status string) asynctasks.Task {
	t.Helper()
	var task asynctasks.Task
	require.Eventually(t, func() bool {
		var err error
		task, err = p.Task(context.Background(), id)
		require.NoError(t, err)
		return task.Status == status
	}, 30*time.Second, 10*time.Millisecond, "task %d never reached %s (last: %+v)", id, status, task)
	return task
}

// Six tasks that only finish once six run at once, with two slots per
// instance: each instance runs exactly two, then more tasks each run once.
func TestTasksSpreadOverInstancesEachRunsOnce(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	c := newCluster(6)
	_, plugins := startInstances(t, db, c, 2)

	var ids []int64
	for range 6 {
		id, err := plugins[0].CreateTask(ctx, "barrier", nil)
		require.NoError(t, err)
		ids = append(ids, id)
	}
	for _, id := range ids {
		waitStatus(t, plugins[1], id, asynctasks.StatusSucceeded)
	}
	perInstance := map[string]int{}
	for _, id := range ids {
		task, err := plugins[2].Task(ctx, id)
		require.NoError(t, err)
		perInstance[task.Instance]++
	}
	require.Equal(t, map[string]int{"inst-0": 2, "inst-1": 2, "inst-2": 2}, perInstance)

	// More tasks, from every instance: each runs exactly once, with its result.
	var more []int64
	for i := range 12 {
		id, err := plugins[i%3].CreateTask(ctx, "double", map[string]int{"n": i})
		require.NoError(t, err)
		more = append(more, id)
	}
	for i, id := range more {
		task := waitStatus(t, plugins[0], id, asynctasks.StatusSucceeded)
		require.JSONEq(t, fmt.Sprintf(`{"double":%d}`, 2*i), string(task.Result))
	}
	c.mu.Lock()
	for _, id := range append(ids, more...) {
		require.Equal(t, 1, c.runs[id], "task %d ran once", id)
	}
	c.mu.Unlock()
	for _, p := range plugins {
		require.LessOrEqual(t, p.Stats().MaxRunning, int64(2), "per-instance concurrency")
	}
}

// A long task is cancelled from an instance that does not run it: its ctx is
// cancelled on the instance running it and it ends CANCELED.
func TestCancelFromAnotherInstance(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	c := newCluster(0)
	apps, plugins := startInstances(t, db, c, 1)

	id, err := plugins[0].CreateTask(ctx, "long", nil)
	require.NoError(t, err)
	started := <-c.started
	require.Equal(t, id, started.ID)
	running := waitStatus(t, plugins[0], id, asynctasks.StatusRunning)
	runner := -1
	for i, a := range apps {
		if a.InstanceID() == running.Instance {
			runner = i
		}
	}
	require.NotEqual(t, -1, runner)
	canceller := (runner + 1) % 3

	ok, err := plugins[canceller].CancelTask(ctx, id)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, id, <-c.ctxDone, "the running task's ctx was cancelled")
	waitStatus(t, plugins[runner], id, asynctasks.StatusCanceled)
	// The runner counts the cancel, then says so in a "cancelled" event.
	e := waitEvent(t, c.events, "cancelled")
	require.Equal(t, id, e.TaskID)
	require.Equal(t, apps[canceller].InstanceID(), e.RequestedBy)
	require.Equal(t, apps[runner].InstanceID(), e.Instance)
	require.EqualValues(t, 1, plugins[runner].Stats().Cancelled)
	for e := range drain(c.events) {
		if e.Kind == "cancelled" {
			require.Equal(t, apps[canceller].InstanceID(), e.RequestedBy)
			require.Equal(t, apps[runner].InstanceID(), e.Instance)
		}
	}

	// Cancelling again, or an unknown task, is not an error and changes nothing.
	ok, err = plugins[runner].CancelTask(ctx, id)
	require.NoError(t, err)
	require.False(t, ok)
	ok, err = plugins[0].CancelTask(ctx, 999999)
	require.NoError(t, err)
	require.False(t, ok)

	// A long task cancelled on the instance running it stops too.
	id2, err := plugins[1].CreateTask(ctx, "long", nil)
	require.NoError(t, err)
	<-c.started
	running = waitStatus(t, plugins[0], id2, asynctasks.StatusRunning)
	for i, a := range apps {
		if a.InstanceID() == running.Instance {
			runner = i
		}
	}
	ok, err = plugins[runner].CancelTask(ctx, id2)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, id2, <-c.ctxDone)
	waitStatus(t, plugins[0], id2, asynctasks.StatusCanceled)
}

// waitEvent returns the next event of kind from ch (dropping the others
// before it), failing the test after 30 s.
func waitEvent(t *testing.T, ch chan asynctasks.Event, kind string) asynctasks.Event {
	t.Helper()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for {
		select {
		case e := <-ch:
			if e.Kind == kind {
				return e
			}
		case <-deadline.C:
			require.FailNow(t, "no event", "want a %q event", kind)
		}
	}
}

func drain(ch chan asynctasks.Event) func(func(asynctasks.Event) bool) {
	return func(yield func(asynctasks.Event) bool) {
		for {
			select {
			case e := <-ch:
				if !yield(e) {
					return
				}
			default:
				return
			}
		}
	}
}

// A task created in a rolled-back transaction neither exists nor runs; a
// failing task ends FAILED with its error; bad input writes nothing.
func TestRollbackFailureAndBadInput(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	c := newCluster(0)
	apps, plugins := startInstances(t, db, c, 1)

	tx, err := txhooks.Begin(ctx, apps[0].DB())
	require.NoError(t, err)
	ghost, err := plugins[0].CreateTaskTx(ctx, tx, "double", map[string]int{"n": 1})
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(ctx))

	failing, err := plugins[0].CreateTask(ctx, "fail", nil)
	require.NoError(t, err)
	task := waitStatus(t, plugins[1], failing, asynctasks.StatusFailed)
	require.JSONEq(t, `{"error":"boom"}`, string(task.Result))

	// Once a later task finished, the rolled-back one has not run: it was
	// never queued.
	marker, err := plugins[2].CreateTask(ctx, "double", map[string]int{"n": 2})
	require.NoError(t, err)
	waitStatus(t, plugins[0], marker, asynctasks.StatusSucceeded)
	_, err = plugins[0].Task(ctx, ghost)
	require.Error(t, err, "the rolled-back task does not exist")
	c.mu.Lock()
	require.Zero(t, c.runs[ghost])
	c.mu.Unlock()

	_, err = plugins[0].CreateTask(ctx, "", nil)
	require.ErrorIs(t, err, asynctasks.ErrEmptyType)
	_, err = plugins[0].CreateTask(ctx, "double", func() {})
	require.Error(t, err, "unencodable params")
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM tasks`).Scan(&n))
	require.Equal(t, 2, n, "only the failing task and the marker were written")

	_, err = asynctasks.New(asynctasks.Config{})
	require.Error(t, err, "Execute is required")
	_, err = asynctasks.New(asynctasks.Config{Execute: c.execute, Concurrency: -1})
	require.Error(t, err)
	_, err = asynctasks.New(asynctasks.Config{Execute: c.execute, Schema: `x"; DROP`})
	require.ErrorContains(t, err, "asynctasks: Config.Schema: ", "an invalid schema is refused, naming the field")
}

// NocoBase's "concurrency 3" test: with 4 queued tasks on one instance of
// concurrency 3, exactly 3 run and 1 stays PENDING; when one ends the fourth
// starts.
func TestConcurrencyLimitOnOneInstance(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	c := newCluster(0)
	_, plugins := startN(t, db, c, 1, 3)
	p := plugins[0]

	var ids []int64
	for range 4 {
		id, err := p.CreateTask(ctx, "long", nil)
		require.NoError(t, err)
		ids = append(ids, id)
	}
	first := map[int64]bool{}
	for range 3 {
		first[(<-c.started).ID] = true
	}
	statuses := func() map[string]int {
		counts := map[string]int{}
		for _, id := range ids {
			task, err := p.Task(ctx, id)
			require.NoError(t, err)
			counts[task.Status]++
		}
		return counts
	}
	require.Eventually(t, func() bool { return statuses()[asynctasks.StatusRunning] == 3 }, 30*time.Second, 10*time.Millisecond)
	require.Equal(t, map[string]int{asynctasks.StatusRunning: 3, asynctasks.StatusPending: 1}, statuses(),
		"the fourth task waits: this instance runs at most 3")

	// Cancelling one running task (locally) frees a slot for the fourth.
	var victim int64
	for id := range first {
		victim = id
		break
	}
	ok, err := p.CancelTask(ctx, victim)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, victim, <-c.ctxDone)
	fourth := <-c.started
	require.False(t, first[fourth.ID])
	for _, id := range ids {
		if id != victim {
			ok, err := p.CancelTask(ctx, id)
			require.NoError(t, err)
			require.True(t, ok)
			<-c.ctxDone
		}
	}
	require.Eventually(t, func() bool { return statuses()[asynctasks.StatusCanceled] == 4 }, 30*time.Second, 10*time.Millisecond)
	require.EqualValues(t, 3, p.Stats().MaxRunning)
	require.EqualValues(t, 4, p.Stats().Ran)
}

// A task interrupted because its instance stops (the stop's grace period
// ran out) goes back to PENDING and runs again on another instance.
func TestTaskInterruptedByStopRunsElsewhere(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	c := newCluster(0)
	apps, plugins := startN(t, db, c, 2, 1)

	id, err := plugins[0].CreateTask(ctx, "long", nil)
	require.NoError(t, err)
	<-c.started
	running := waitStatus(t, plugins[0], id, asynctasks.StatusRunning)
	runner := 0
	if apps[1].InstanceID() == running.Instance {
		runner = 1
	}
	other := 1 - runner

	stopCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, apps[runner].Stop(stopCtx), context.DeadlineExceeded, "the grace period ran out")
	require.Equal(t, id, <-c.ctxDone, "the interrupted task's ctx was cancelled")

	again := <-c.started
	require.Equal(t, id, again.ID, "the task runs again")
	require.Equal(t, apps[other].InstanceID(), again.Instance, "on the other instance")
	ok, err := plugins[other].CancelTask(ctx, id)
	require.NoError(t, err)
	require.True(t, ok)
	<-c.ctxDone
	waitStatus(t, plugins[other], id, asynctasks.StatusCanceled)
	c.mu.Lock()
	require.Equal(t, 2, c.runs[id])
	c.mu.Unlock()
}
