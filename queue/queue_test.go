package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/queue"
)

// NocoBase: subscribe before connect, then publish → called once with
// (message, {id, retried: 0, options}).
func TestSubscribeBeforeStartDeliversOnce(t *testing.T) {
	db, q := openQueue(t)
	got := make(chan queue.Message, 10)
	require.NoError(t, q.Subscribe(ctxT(t), "test1", queue.Consumer{Concurrency: 1, Process: func(ctx context.Context, m queue.Message) error {
		if _, ok := ctx.Deadline(); !ok {
			return errors.New("no deadline")
		}
		got <- m
		return nil
	}}))
	start(t, q)
	id := publish(t, q, "test1", "message1", nil)
	m := <-got
	require.Equal(t, id, m.ID)
	require.Equal(t, "test1", m.Channel)
	require.JSONEq(t, `"message1"`, string(m.Payload))
	require.Equal(t, 0, m.Retried)
	require.Equal(t, queue.DefaultTimeout, m.Options.Timeout)
	require.Equal(t, 0, m.Options.MaxRetries)
	require.False(t, m.Options.PublishedAt.IsZero())
	waitState(t, db, id, "completed")
	require.Empty(t, got)
}

// NocoBase: subscribe after connect → same as before connect.
func TestSubscribeAfterStart(t *testing.T) {
	db, q := openQueue(t)
	start(t, q)
	got := make(chan queue.Message, 10)
	require.NoError(t, q.Subscribe(ctxT(t), "test1", queue.Consumer{Concurrency: 1, Process: func(_ context.Context, m queue.Message) error {
		got <- m
		return nil
	}}))
	id := publish(t, q, "test1", "message1", nil)
	require.Equal(t, id, (<-got).ID)
	waitState(t, db, id, "completed")
	require.Empty(t, got)
}

// NocoBase ignores a second subscribe with a warning; here it is an error
// and the first consumer stays: the message is processed exactly once, by it.
func TestSubscribeTwiceIsAnError(t *testing.T) {
	db, q := openQueue(t)
	var first, second atomic.Int32
	require.NoError(t, q.Subscribe(ctxT(t), "test1", queue.Consumer{Concurrency: 1, Process: func(context.Context, queue.Message) error { first.Add(1); return nil }}))
	err := q.Subscribe(ctxT(t), "test1", queue.Consumer{Concurrency: 1, Process: func(context.Context, queue.Message) error { second.Add(1); return nil }})
	require.ErrorIs(t, err, queue.ErrAlreadySubscribed)
	start(t, q)
	id := publish(t, q, "test1", "message1", nil)
	waitState(t, db, id, "completed")
	require.Equal(t, int32(1), first.Load())
	require.Equal(t, int32(0), second.Load())
}

// NocoBase rejects publish while not connected; a durable queue accepts it
// and the message is processed once the consumer starts.
func TestPublishBeforeStartIsKeptUntilStart(t *testing.T) {
	db, q := openQueue(t)
	var calls atomic.Int32
	require.NoError(t, q.Subscribe(ctxT(t), "test1", counting(&calls)))
	id := publish(t, q, "test1", "message1", nil)
	requireQueued(t, db, id)
	require.Equal(t, int32(0), calls.Load())
	start(t, q)
	requireProcessedOnce(t, db, id, &calls)
}

// NocoBase "closed": after close, publish rejects. Every call after Stop
// returns ErrClosed; Stop is idempotent and safe before Start.
func TestCallsAfterStopReturnErrClosed(t *testing.T) {
	db, q := openQueue(t)
	require.NoError(t, q.Subscribe(ctxT(t), "test1", queue.Consumer{Process: func(context.Context, queue.Message) error { return nil }}))
	start(t, q)
	ctx := ctxT(t)
	require.NoError(t, q.Stop(ctx))
	require.NoError(t, q.Stop(ctx))

	_, err := q.Publish(ctx, "test1", 1, nil)
	require.ErrorIs(t, err, queue.ErrClosed)
	_, err = q.PublishMany(ctx, []queue.Publication{{Channel: "test1", Payload: 1}})
	require.ErrorIs(t, err, queue.ErrClosed)
	require.ErrorIs(t, q.Subscribe(ctxT(t), "other", queue.Consumer{Process: func(context.Context, queue.Message) error { return nil }}), queue.ErrClosed)
	require.ErrorIs(t, q.Unsubscribe(ctx, "test1"), queue.ErrClosed)
	require.ErrorIs(t, q.Cancel(ctx, 1), queue.ErrClosed)
	_, err = q.Stats(ctx)
	require.ErrorIs(t, err, queue.ErrClosed)
	_, err = q.Inspect(ctx, 1)
	require.ErrorIs(t, err, queue.ErrClosed)
	require.ErrorIs(t, q.Start(ctx), queue.ErrClosed)
	require.Equal(t, 0, countJobs(t, db))

	never := newQueue(t, db, nil, nil)
	require.NoError(t, never.Stop(ctx))
	require.ErrorIs(t, never.Start(ctx), queue.ErrClosed)
}

func TestStartFailsFastWithoutDatabase(t *testing.T) {
	t.Parallel()
	// Nothing listens on port 1: Start must fail, not hang.
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none?connect_timeout=5")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	q, err := queue.New(pool, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.Error(t, q.Start(ctx))
	require.NoError(t, q.Stop(ctx))
}

// Bad input is an error and nothing is written.
func TestBadInputWritesNothing(t *testing.T) {
	db := open(t)
	q := newQueue(t, db, nil, &queue.Config{MaxPayloadBytes: 64})
	ctx := ctxT(t)
	_, err := q.Publish(ctx, "", 1, nil)
	require.ErrorIs(t, err, queue.ErrEmptyChannel)
	_, err = q.Publish(ctx, "c", 1, &queue.PublishOpts{MaxRetries: -1})
	require.ErrorIs(t, err, queue.ErrInvalidOptions)
	_, err = q.Publish(ctx, "c", 1, &queue.PublishOpts{Timeout: -time.Second})
	require.ErrorIs(t, err, queue.ErrInvalidOptions)
	_, err = q.Publish(ctx, "c", 1, &queue.PublishOpts{Delay: -time.Second})
	require.ErrorIs(t, err, queue.ErrInvalidOptions)
	_, err = q.Publish(ctx, "c", make(chan int), nil)
	require.ErrorIs(t, err, queue.ErrInvalidPayload)
	_, err = q.Publish(ctx, "c", json.RawMessage(`{"a":`), nil)
	require.ErrorIs(t, err, queue.ErrInvalidPayload)
	_, err = q.Publish(ctx, "c", string(make([]byte, 100)), nil)
	require.ErrorIs(t, err, queue.ErrPayloadTooLarge)
	// One bad message in a batch: none stored.
	_, err = q.PublishMany(ctx, []queue.Publication{{Channel: "c", Payload: 1}, {Channel: "", Payload: 2}})
	require.ErrorIs(t, err, queue.ErrEmptyChannel)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = q.Publish(cancelled, "c", 1, nil)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, 0, countJobs(t, db))

	ok := func(context.Context, queue.Message) error { return nil }
	require.ErrorIs(t, q.Subscribe(ctxT(t), "", queue.Consumer{Process: ok}), queue.ErrEmptyChannel)
	require.ErrorIs(t, q.Subscribe(ctxT(t), "c", queue.Consumer{}), queue.ErrInvalidOptions)
	require.ErrorIs(t, q.Subscribe(ctxT(t), "c", queue.Consumer{Process: ok, Concurrency: -1}), queue.ErrInvalidOptions)
	require.ErrorIs(t, q.Subscribe(ctxT(t), "c", queue.Consumer{Process: ok, Concurrency: queue.MaxConcurrency + 1}), queue.ErrInvalidOptions)
	require.ErrorIs(t, q.Subscribe(ctxT(t), "c", queue.Consumer{Process: ok, PollInterval: time.Microsecond}), queue.ErrInvalidOptions)
	require.ErrorIs(t, q.Unsubscribe(ctx, "c"), queue.ErrNotSubscribed)
	require.ErrorIs(t, q.Subscribe(cancelled, "c", queue.Consumer{Process: ok}), context.Canceled)
	require.ErrorIs(t, q.Unsubscribe(ctx, "c"), queue.ErrNotSubscribed, "a cancelled Subscribe subscribes nothing")

	_, err = queue.New(db.Pool, &queue.Config{Schema: "bad schema"})
	require.Error(t, err)
	_, err = queue.New(db.Pool, &queue.Config{DefaultTimeout: -time.Second})
	require.ErrorIs(t, err, queue.ErrInvalidOptions)
	_, err = queue.New(nil, nil)
	require.ErrorIs(t, err, queue.ErrInvalidOptions)
}

// A payload is the published JSON value, stored as jsonb (River's args):
// values round-trip, compact, in jsonb's key order, the last of duplicate
// keys kept; numbers keep every digit; a \u0000 escape, which jsonb cannot
// hold, round-trips byte for byte.
func TestPayloadRoundTrips(t *testing.T) {
	_, q := openQueue(t)
	got := make(chan json.RawMessage, 10)
	require.NoError(t, q.Subscribe(ctxT(t), "c", queue.Consumer{Concurrency: 1, Process: func(_ context.Context, m queue.Message) error { got <- m.Payload; return nil }}))
	start(t, q)
	for _, p := range []struct{ in, out string }{
		{`{"b":1, "a":[true,false,null],"b":2.50}`, `{"a":[true,false,null],"b":2.50}`},
		{`"nul \u0000 and <html> & é"`, `"nul \u0000 and <html> & é"`},
		{`"<html> & \u00e9"`, `"<html> & é"`},
		{`12345678901234567890.123`, `12345678901234567890.123`},
		{`null`, `null`},
	} {
		publish(t, q, "c", json.RawMessage(p.in), nil)
		require.Equal(t, p.out, string(receive(t, got)))
	}
	type obj struct {
		N int    `json:"n"`
		S string `json:"s"`
	}
	publish(t, q, "c", obj{N: 7, S: "x"}, nil)
	require.Equal(t, `{"n":7,"s":"x"}`, string(receive(t, got)))
}

// NocoBase: "idle() always false → never called". The message stays queued,
// unclaimed and uncharged; another instance that is idle takes it.
func TestIdleGatingMovesWorkToOtherInstances(t *testing.T) {
	db := open(t)
	busy := newQueue(t, db, db.NewPool(t, &pgtest.PoolOptions{AppName: "busy"}), &queue.Config{InstanceID: "busy"})
	var busyCalls atomic.Int32
	asked := make(chan struct{}, 1)
	require.NoError(t, busy.Subscribe(ctxT(t), "test1", queue.Consumer{
		Concurrency:  1,
		PollInterval: 20 * time.Millisecond,
		Idle: func() bool {
			select {
			case asked <- struct{}{}:
			default:
			}
			return false
		},
		Process: func(context.Context, queue.Message) error { busyCalls.Add(1); return nil },
	}))
	start(t, busy)
	ids := make([]int64, 3)
	for i := range ids {
		id := publish(t, busy, "test1", i, nil)
		ids[i] = id
	}
	// The busy instance keeps being asked and keeps declining.
	for range 6 {
		receive(t, asked)
	}
	for _, id := range ids {
		requireQueued(t, db, id)
	}

	free := newQueue(t, db, db.NewPool(t, &pgtest.PoolOptions{AppName: "free"}), &queue.Config{InstanceID: "free"})
	var freeCalls atomic.Int32
	require.NoError(t, free.Subscribe(ctxT(t), "test1", queue.Consumer{Concurrency: 1, Idle: func() bool { return true }, Process: func(context.Context, queue.Message) error { freeCalls.Add(1); return nil }}))
	start(t, free)
	for _, id := range ids {
		waitState(t, db, id, "completed")
		_, attempt, _ := jobState(t, db, id)
		require.Equal(t, 1, attempt)
	}
	require.Equal(t, int32(3), freeCalls.Load())
	require.Equal(t, int32(0), busyCalls.Load())
}

// NocoBase "plugin consume" (MockPlugin: default concurrency 1): idle() is
// false while processing, so two messages run one after the other, in
// publish order.
func TestIdleFalseWhileProcessingIsSequentialFIFO(t *testing.T) {
	db, q := openQueue(t)
	var processing, overlap atomic.Int32
	var mu sync.Mutex
	var order []string
	require.NoError(t, q.Subscribe(ctxT(t), "test1", queue.Consumer{
		Concurrency:  1,
		PollInterval: 20 * time.Millisecond,
		Idle:         func() bool { return processing.Load() == 0 },
		Process: func(_ context.Context, m queue.Message) error {
			if processing.Add(1) > 1 {
				overlap.Add(1)
			}
			defer processing.Add(-1)
			var s string
			_ = json.Unmarshal(m.Payload, &s)
			mu.Lock()
			order = append(order, s)
			mu.Unlock()
			time.Sleep(20 * time.Millisecond) // simulated work
			return nil
		},
	}))
	a := publish(t, q, "test1", "message1", nil)
	b := publish(t, q, "test1", "message2", nil)
	start(t, q)
	waitState(t, db, a, "completed")
	waitState(t, db, b, "completed")
	require.Equal(t, []string{"message1", "message2"}, order)
	require.Zero(t, overlap.Load())
}

// NocoBase "consume next message immediately": with a poll interval far
// beyond the test's deadline, the second message still starts right after
// the first finishes (River fetches again when a slot frees after a full
// fetch), in FIFO order.
func TestNextMessageStartsAfterCompletionWithoutPolling(t *testing.T) {
	_, q := openQueue(t)
	release := make(chan struct{})
	got := make(chan string, 2)
	require.NoError(t, q.Subscribe(ctxT(t), "test1", queue.Consumer{
		Concurrency:  1,
		PollInterval: time.Hour,
		Process: func(ctx context.Context, m queue.Message) error {
			var s string
			_ = json.Unmarshal(m.Payload, &s)
			got <- s
			if s == "message1" {
				<-release
			}
			return nil
		},
	}))
	start(t, q)
	publish(t, q, "test1", "message1", nil)
	require.Equal(t, "message1", <-got)
	publish(t, q, "test1", "message2", nil)
	close(release)
	select {
	case s := <-got:
		require.Equal(t, "message2", s)
	case <-time.After(waitFor):
		t.Fatal("message2 never started")
	}
}

// NocoBase "retry": process always throws, maxRetries 3 → 4 calls; then the
// message is discarded and kept with its 4 errors.
func TestRetriesExhaustedDiscards(t *testing.T) {
	db := open(t)
	q := newQueue(t, db, nil, &queue.Config{RetryBackoff: 10 * time.Millisecond})
	var mu sync.Mutex
	var retried []int
	require.NoError(t, q.Subscribe(ctxT(t), "test1", queue.Consumer{Concurrency: 1, PollInterval: 20 * time.Millisecond, Process: func(_ context.Context, m queue.Message) error {
		mu.Lock()
		retried = append(retried, m.Retried)
		mu.Unlock()
		require.Equal(t, 3, m.Options.MaxRetries)
		return errors.New("boom")
	}}))
	start(t, q)
	id := publish(t, q, "test1", "m", &queue.PublishOpts{MaxRetries: 3})
	waitState(t, db, id, "discarded")
	s, attempt, errs := jobState(t, db, id)
	require.Equal(t, "discarded", s)
	require.Equal(t, 4, attempt)
	require.Equal(t, 4, errs)
	mu.Lock()
	require.Equal(t, []int{0, 1, 2, 3}, retried)
	mu.Unlock()

	st, err := q.Stats(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, queue.ChannelStats{Discarded: 1, Retried: 1}, st["test1"])

	// The dead letter stays inspectable with every attempt's error.
	dead, err := q.Inspect(ctxT(t), id)
	require.NoError(t, err)
	require.Equal(t, "discarded", dead.State)
	require.Equal(t, "test1", dead.Channel)
	require.JSONEq(t, `"m"`, string(dead.Payload))
	require.Equal(t, 4, dead.Attempts)
	require.Len(t, dead.Errors, 4)
	for i, e := range dead.Errors {
		require.Equal(t, i+1, e.Attempt)
		require.Equal(t, "boom", e.Error)
	}
	require.False(t, dead.FinalizedAt.IsZero())
	require.Equal(t, 3, dead.Options.MaxRetries)
	_, err = q.Inspect(ctxT(t), id+1000)
	require.ErrorIs(t, err, queue.ErrNotFound)
}

// Default MaxRetries is 0 (NocoBase): one failure discards. A panic is a
// failed attempt too. NocoBase "failure with concurrency": the other
// message still completes.
func TestFailureAndPanicWithConcurrency(t *testing.T) {
	db, q := openQueue(t)
	var calls atomic.Int32
	require.NoError(t, q.Subscribe(ctxT(t), "test1", queue.Consumer{Concurrency: 2, Process: func(_ context.Context, m queue.Message) error {
		calls.Add(1)
		switch string(m.Payload) {
		case "0":
			return errors.New("falsy message")
		case "2":
			panic("kaboom")
		}
		return nil
	}}))
	start(t, q)
	ids, err := q.PublishMany(ctxT(t), []queue.Publication{{Channel: "test1", Payload: 1}, {Channel: "test1", Payload: 0}, {Channel: "test1", Payload: 2}})
	require.NoError(t, err)
	require.Len(t, ids, 3)
	waitState(t, db, ids[0], "completed")
	waitState(t, db, ids[1], "discarded")
	waitState(t, db, ids[2], "discarded")
	var trace string
	require.NoError(t, db.Pool.QueryRow(ctxT(t), `SELECT errors[1]->>'error' FROM pgcoord.river_job WHERE id = $1`, ids[2]).Scan(&trace))
	require.Contains(t, trace, "kaboom")
	require.Equal(t, int32(3), calls.Load())
}

// NocoBase "timeout": the ctx ends at the message's timeout, which is a
// failed attempt; {timeout, maxRetries: 1} → 2 calls. A message with a
// longer timeout completes.
func TestTimeoutCancelsContextAndCountsAsFailure(t *testing.T) {
	db := open(t)
	q := newQueue(t, db, nil, &queue.Config{RetryBackoff: 10 * time.Millisecond})
	var calls atomic.Int32
	require.NoError(t, q.Subscribe(ctxT(t), "test1", queue.Consumer{Concurrency: 2, PollInterval: 20 * time.Millisecond, Process: func(ctx context.Context, m queue.Message) error {
		calls.Add(1)
		if string(m.Payload) == `"slow"` {
			<-ctx.Done()
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return errors.New("ctx ended without a deadline")
			}
			return ctx.Err()
		}
		return nil
	}}))
	start(t, q)
	slow := publish(t, q, "test1", "slow", &queue.PublishOpts{Timeout: 100 * time.Millisecond, MaxRetries: 1})
	fast := publish(t, q, "test1", "fast", &queue.PublishOpts{Timeout: 10 * time.Second})
	waitState(t, db, slow, "discarded")
	waitState(t, db, fast, "completed")
	_, attempt, errs := jobState(t, db, slow)
	require.Equal(t, 2, attempt)
	require.Equal(t, 2, errs)
	require.Equal(t, int32(3), calls.Load())
}

// Concurrency 0 is DefaultConcurrency (1, NocoBase's default; NocoBase's
// explicit 0 meant unlimited, a Go zero value cannot): 3 messages run one
// at a time. MaxConcurrency (River's maximum) runs all 3 at once.
func TestConcurrencyDefaultAndMax(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		concurrency int
		peak        int32
	}{{"zero is one", 0, 1}, {"max runs all", queue.MaxConcurrency, 3}} {
		t.Run(tc.name, func(t *testing.T) {
			_, q := openQueue(t)
			var active, peak atomic.Int32
			all := make(chan struct{})
			var once sync.Once
			done := make(chan struct{}, 3)
			require.NoError(t, q.Subscribe(ctxT(t), "test1", queue.Consumer{Concurrency: tc.concurrency, Process: func(ctx context.Context, _ queue.Message) error {
				defer func() { done <- struct{}{} }()
				defer enter(&active, &peak)()
				if active.Load() >= tc.peak {
					once.Do(func() { close(all) })
				}
				select {
				case <-all:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			}}))
			start(t, q)
			_, err := q.PublishMany(ctxT(t), []queue.Publication{{Channel: "test1", Payload: 1}, {Channel: "test1", Payload: 2}, {Channel: "test1", Payload: 3}})
			require.NoError(t, err)
			for range 3 {
				receive(t, done)
			}
			require.Equal(t, tc.peak, peak.Load())
		})
	}
}

// NocoBase "concurrency: 2 with 5 messages" and "staggered publishes": never
// more than 2 run at once, all 5 complete.
func TestConcurrencyLimit(t *testing.T) {
	_, q := openQueue(t)
	var active, peak atomic.Int32
	done := make(chan struct{}, 5)
	require.NoError(t, q.Subscribe(ctxT(t), "test1", queue.Consumer{Concurrency: 2, Process: func(context.Context, queue.Message) error {
		defer enter(&active, &peak)()
		defer func() { done <- struct{}{} }()
		time.Sleep(10 * time.Millisecond) // simulated work
		return nil
	}}))
	start(t, q)
	completed, unsubscribe := q.JobEvents(river.EventKindJobCompleted)
	defer unsubscribe()
	for i := range 5 {
		publish(t, q, "test1", i, nil)
	}
	for range 5 {
		receive(t, done)
	}
	require.LessOrEqual(t, peak.Load(), int32(2))
	for range 5 {
		receive(t, completed) // written as completed
	}
	st, err := q.Stats(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, queue.ChannelStats{Completed: 5}, st["test1"])
}

// Only instances that subscribe a channel consume it; a publisher need not
// subscribe (NocoBase's WORKER_MODE split).
func TestPublisherNeedNotSubscribe(t *testing.T) {
	db := open(t)
	pub := newQueue(t, db, db.NewPool(t, &pgtest.PoolOptions{AppName: "pub"}), nil)
	start(t, pub)
	worker := newQueue(t, db, nil, nil)
	var calls atomic.Int32
	require.NoError(t, worker.Subscribe(ctxT(t), "jobs", counting(&calls)))
	start(t, worker)
	id := publish(t, pub, "jobs", 1, nil)
	requireProcessedOnce(t, db, id, &calls)
}

// A channel is namespaced by app unless Shared.
func TestAppNamespacingAndShared(t *testing.T) {
	db := open(t)
	a := newQueue(t, db, nil, &queue.Config{AppName: "a"})
	b := newQueue(t, db, nil, &queue.Config{AppName: "b"})
	got := make(chan string, 10)
	rec := func(app string) func(context.Context, queue.Message) error {
		return func(_ context.Context, m queue.Message) error {
			got <- app + ":" + m.Channel + ":" + string(m.Payload)
			return nil
		}
	}
	require.NoError(t, a.Subscribe(ctxT(t), "local", queue.Consumer{Concurrency: 1, Process: rec("a")}))
	require.NoError(t, a.Subscribe(ctxT(t), "global", queue.Consumer{Concurrency: 1, Shared: true, Process: rec("a")}))
	start(t, a)
	start(t, b)

	// b publishes to its own "local": a does not consume it.
	notForA := publish(t, b, "local", 1, nil)
	// b publishes to the shared "global": a consumes it.
	shared := publish(t, b, "global", 2, &queue.PublishOpts{Shared: true})
	// a's own "local".
	mine := publish(t, a, "local", 3, nil)
	waitState(t, db, shared, "completed")
	waitState(t, db, mine, "completed")
	s, _, _ := jobState(t, db, notForA)
	require.Equal(t, "available", s)
	require.ElementsMatch(t, []string{"a:global:2", "a:local:3"}, []string{<-got, <-got})
}

// NocoBase "persistence": publish then close before processing; the message
// is processed once when an instance starts again.
func TestMessagesSurviveStop(t *testing.T) {
	db := open(t)
	first := newQueue(t, db, nil, nil)
	require.NoError(t, first.Subscribe(ctxT(t), "test1", queue.Consumer{Concurrency: 1, Idle: func() bool { return false }, Process: func(context.Context, queue.Message) error { return errors.New("must not run") }}))
	start(t, first)
	id := publish(t, first, "test1", "message1", nil)
	require.NoError(t, first.Stop(ctxT(t)))
	requireQueued(t, db, id)

	second := newQueue(t, db, nil, nil)
	var calls atomic.Int32
	require.NoError(t, second.Subscribe(ctxT(t), "test1", counting(&calls)))
	start(t, second)
	requireProcessedOnce(t, db, id, &calls)
}

// NocoBase "graceful shutdown waits": Stop does not return while a message
// runs; the message can still use the database, and completes.
func TestStopWaitsForRunningMessage(t *testing.T) {
	db, q := openQueue(t)
	started := make(chan struct{})
	release := make(chan struct{})
	require.NoError(t, q.Subscribe(ctxT(t), "test1", queue.Consumer{Concurrency: 1, Process: func(ctx context.Context, _ queue.Message) error {
		close(started)
		<-release
		if ctx.Err() != nil {
			return ctx.Err()
		}
		_, err := db.Pool.Exec(ctx, `SELECT 1`)
		return err
	}}))
	start(t, q)
	id := publish(t, q, "test1", 1, nil)
	<-started
	stopped := make(chan error, 1)
	go func() { stopped <- q.Stop(ctxT(t)) }()
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned while a message was running: %v", err)
	default:
	}
	// A message that runs during Stop may still publish.
	publish(t, q, "test1", 2, nil)
	close(release)
	require.NoError(t, <-stopped)
	waitState(t, db, id, "completed")
}

// Stop's ctx ending cancels the running message's ctx; the message goes back
// to the queue without being charged an attempt.
func TestStopDeadlineCancelsAndRequeues(t *testing.T) {
	db, q := openQueue(t)
	started := make(chan struct{})
	require.NoError(t, q.Subscribe(ctxT(t), "test1", queue.Consumer{Concurrency: 1, Process: func(ctx context.Context, _ queue.Message) error {
		close(started)
		<-ctx.Done()
		return errors.New("gave up") // not the ctx error: still not charged
	}}))
	start(t, q)
	id := publish(t, q, "test1", 1, nil)
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, q.Stop(ctx), context.DeadlineExceeded)
	waitState(t, db, id, "available")
	_, attempt, errs := jobState(t, db, id)
	require.Equal(t, 0, attempt)
	require.Equal(t, 0, errs)
}

// Stop past its deadline with a Process that ignores its ctx: Stop returns
// (ctx's deadline plus queue.StopGrace at most) while Process still runs,
// the message is available again the moment Stop returns (not charged an
// attempt), and another instance runs it. The abandoned Process returning
// later changes nothing.
func TestStopPastDeadlineAbandonsHungMessage(t *testing.T) {
	db := open(t)
	q := newQueue(t, db, db.NewPool(t, &pgtest.PoolOptions{AppName: "hung"}), &queue.Config{InstanceID: "hung"})
	started := make(chan struct{})
	release := make(chan struct{})
	returned := make(chan struct{})
	require.NoError(t, q.Subscribe(ctxT(t), "test1", queue.Consumer{Concurrency: 1, Process: func(context.Context, queue.Message) error {
		defer close(returned)
		close(started)
		<-release // ignores its ctx
		return nil
	}}))
	start(t, q)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	id := publish(t, q, "test1", 1, nil)
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := q.Stop(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	select {
	case <-returned:
		t.Fatal("Process returned although it ignores its ctx")
	default:
	}
	s, attempt, errs := jobState(t, db, id)
	require.Equal(t, "available", s, "an abandoned message is handed back when Stop returns")
	require.Equal(t, 0, attempt)
	require.Equal(t, 0, errs)

	got := make(chan int64, 1)
	other := newQueue(t, db, db.NewPool(t, &pgtest.PoolOptions{AppName: "other"}), &queue.Config{InstanceID: "other"})
	require.NoError(t, other.Subscribe(ctxT(t), "test1", queue.Consumer{Concurrency: 1, Process: func(_ context.Context, m queue.Message) error {
		got <- m.ID
		return nil
	}}))
	start(t, other)
	require.Equal(t, id, <-got)
	waitState(t, db, id, "completed")
	close(release)
	<-returned
	var by []string
	require.NoError(t, db.Pool.QueryRow(ctxT(t), `SELECT attempted_by FROM pgcoord.river_job WHERE id = $1`, id).Scan(&by))
	require.Equal(t, []string{"hung", "other"}, by)
}

// Cancel of a running message from another instance cancels its ctx, and it
// ends cancelled.
func TestCancelRunningFromAnotherInstance(t *testing.T) {
	db := open(t)
	runner := newQueue(t, db, db.NewPool(t, &pgtest.PoolOptions{AppName: "runner"}), nil)
	started := make(chan struct{})
	cause := make(chan error, 1)
	require.NoError(t, runner.Subscribe(ctxT(t), "test1", queue.Consumer{Concurrency: 1, Process: func(ctx context.Context, _ queue.Message) error {
		close(started)
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return ctx.Err()
	}}))
	start(t, runner)
	other := newQueue(t, db, db.NewPool(t, &pgtest.PoolOptions{AppName: "other"}), nil)
	id := publish(t, other, "test1", 1, nil)
	<-started
	require.NoError(t, other.Cancel(ctxT(t), id))
	select {
	case c := <-cause:
		require.Error(t, c)
	case <-time.After(waitFor):
		t.Fatal("running message's ctx was not cancelled")
	}
	waitState(t, db, id, "cancelled")
	st, err := runner.Stats(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, int64(1), st["test1"].Cancelled)
}

// A running message that is cancelled ends cancelled whatever Process
// returns: here Process notices the cancel and returns nil (or an error).
func TestCancelledRunningEndsCancelledWhateverProcessReturns(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ret  error
	}{{"nil", nil}, {"error", errors.New("stopped early")}} {
		t.Run(tc.name, func(t *testing.T) {
			db, q := openQueue(t)
			started := make(chan struct{})
			require.NoError(t, q.Subscribe(ctxT(t), "test1", queue.Consumer{Concurrency: 1, Process: func(ctx context.Context, _ queue.Message) error {
				close(started)
				<-ctx.Done()
				return tc.ret
			}}))
			start(t, q)
			cancelled, unsubscribe := q.JobEvents(river.EventKindJobCancelled)
			defer unsubscribe()
			id := publish(t, q, "test1", 1, &queue.PublishOpts{MaxRetries: 2})
			<-started
			require.NoError(t, q.Cancel(ctxT(t), id))
			require.Equal(t, id, receive(t, cancelled).Job.ID) // written as cancelled
			s, _, _ := jobState(t, db, id)
			require.Equal(t, "cancelled", s)
		})
	}
}

// Cancel of a queued message: it never runs. Unknown ids are ErrNotFound.
func TestCancelQueued(t *testing.T) {
	db, q := openQueue(t)
	var calls atomic.Int32
	require.NoError(t, q.Subscribe(ctxT(t), "test1", queue.Consumer{Concurrency: 1, Idle: func() bool { return calls.Load() >= 0 }, Process: func(context.Context, queue.Message) error { calls.Add(1); return nil }}))
	id := publish(t, q, "test1", 1, &queue.PublishOpts{Delay: time.Hour})
	s, _, _ := jobState(t, db, id)
	require.Equal(t, "scheduled", s)
	require.NoError(t, q.Cancel(ctxT(t), id))
	s, _, _ = jobState(t, db, id)
	require.Equal(t, "cancelled", s)
	require.ErrorIs(t, q.Cancel(ctxT(t), id+1000), queue.ErrNotFound)
	start(t, q)
	// A later message runs; the cancelled one never does.
	next := publish(t, q, "test1", 2, nil)
	waitState(t, db, next, "completed")
	require.Equal(t, int32(1), calls.Load())
}

// UniqueKey: while a message with the key is queued, publishing it again
// returns the same id and stores nothing; once finished, a new one is allowed.
func TestUniqueKey(t *testing.T) {
	db, q := openQueue(t)
	a := publish(t, q, "test1", 1, &queue.PublishOpts{UniqueKey: "k"})
	b := publish(t, q, "test1", 2, &queue.PublishOpts{UniqueKey: "k"})
	require.Equal(t, a, b)
	other := publish(t, q, "test2", 2, &queue.PublishOpts{UniqueKey: "k"})
	require.NotEqual(t, a, other)
	require.Equal(t, 2, countJobs(t, db))

	got := make(chan queue.Message, 10)
	require.NoError(t, q.Subscribe(ctxT(t), "test1", queue.Consumer{Concurrency: 1, Process: func(_ context.Context, m queue.Message) error { got <- m; return nil }}))
	start(t, q)
	m := <-got
	require.Equal(t, "k", m.Options.UniqueKey)
	waitState(t, db, a, "completed")
	c := publish(t, q, "test1", 3, &queue.PublishOpts{UniqueKey: "k"})
	require.NotEqual(t, a, c)
	waitState(t, db, c, "completed")
}

// Unsubscribe stops consuming without losing queued messages, and waits for
// the running one.
func TestUnsubscribeKeepsQueuedMessages(t *testing.T) {
	db, q := openQueue(t)
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	var calls atomic.Int32
	require.NoError(t, q.Subscribe(ctxT(t), "test1", queue.Consumer{Concurrency: 1, Process: func(context.Context, queue.Message) error {
		calls.Add(1)
		started <- struct{}{}
		<-release
		return nil
	}}))
	start(t, q)
	first := publish(t, q, "test1", 1, nil)
	<-started
	unsubscribed := make(chan error, 1)
	go func() { unsubscribed <- q.Unsubscribe(ctxT(t), "test1") }()
	second := publish(t, q, "test1", 2, nil)
	select {
	case err := <-unsubscribed:
		t.Fatalf("Unsubscribe returned while a message was running: %v", err)
	default:
	}
	close(release)
	require.NoError(t, <-unsubscribed)
	waitState(t, db, first, "completed")
	s, attempt, _ := jobState(t, db, second)
	require.Equal(t, "available", s)
	require.Equal(t, 0, attempt)
	require.Equal(t, int32(1), calls.Load())

	// Subscribing again consumes it.
	done := make(chan int64, 1)
	require.NoError(t, q.Subscribe(ctxT(t), "test1", queue.Consumer{Concurrency: 1, Process: func(_ context.Context, m queue.Message) error { done <- m.ID; return nil }}))
	require.Equal(t, second, <-done)
}

// NocoBase §7 (async-task-manager): idle = concurrency monitor has room,
// concurrency 3, 4 tasks: at most 3 run at once; a Process may publish to
// its own channel (the "monitor full, re-publish" pattern), and the
// re-published message runs too.
func TestAsyncTaskManagerPattern(t *testing.T) {
	_, q := openQueue(t)
	var running, peak atomic.Int32
	done := make(chan struct{}, 4)
	var republished atomic.Bool
	require.NoError(t, q.Subscribe(ctxT(t), "async-task-manager.task", queue.Consumer{
		Concurrency: 3,
		Idle:        func() bool { return running.Load() < 3 },
		Process: func(ctx context.Context, m queue.Message) error {
			defer enter(&running, &peak)()
			if string(m.Payload) == `{"id":"t0"}` && !republished.Swap(true) {
				_, err := q.Publish(ctx, "async-task-manager.task", json.RawMessage(`{"id":"t0-again"}`), nil)
				return err
			}
			time.Sleep(5 * time.Millisecond) // simulated work
			done <- struct{}{}
			return nil
		},
	}))
	for i := range 4 {
		publish(t, q, "async-task-manager.task", json.RawMessage(fmt.Sprintf(`{"id":"t%d"}`, i)), nil)
	}
	start(t, q)
	for range 4 {
		receive(t, done)
	}
	require.LessOrEqual(t, peak.Load(), int32(3))
}

// Failures are logged with channel, message_id and attempt; Stats counts
// queued and running messages.
func TestLogsAndStats(t *testing.T) {
	db := open(t)
	var buf pgtest.Buffer
	q := newQueue(t, db, nil, &queue.Config{Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	started := make(chan struct{})
	release := make(chan struct{})
	require.NoError(t, q.Subscribe(ctxT(t), "logged", queue.Consumer{Concurrency: 1, Process: func(_ context.Context, m queue.Message) error {
		if string(m.Payload) == `"fail"` {
			return errors.New("it failed")
		}
		close(started)
		<-release
		return nil
	}}))
	failed := publish(t, q, "logged", "fail", nil)
	start(t, q)
	waitState(t, db, failed, "discarded")
	out := buf.String()
	require.Contains(t, out, `"channel":"logged"`)
	require.Contains(t, out, fmt.Sprintf(`"message_id":%d`, failed))
	require.Contains(t, out, `"attempt":1`)
	require.Contains(t, out, `it failed`)

	running := publish(t, q, "logged", "block", nil)
	<-started
	publish(t, q, "logged", "queued", nil)
	st, err := q.Stats(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, queue.ChannelStats{Queued: 1, Running: 1, Discarded: 1, Retried: 1}, st["logged"])
	close(release)
	waitState(t, db, running, "completed")
}
