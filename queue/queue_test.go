package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/queue"
)

// NocoBase: subscribe before connect, then publish → called once with
// (message, {id, retried: 0, options}).
func TestSubscribeBeforeStartDeliversOnce(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	q := newQueue(t, db, nil, nil)
	got := make(chan queue.Message, 10)
	require.NoError(t, q.Subscribe("test1", queue.Consumer{Concurrency: 1, Process: func(ctx context.Context, m queue.Message) error {
		_, hasDeadline := ctx.Deadline()
		require.True(t, hasDeadline)
		got <- m
		return nil
	}}))
	start(t, q)
	id, err := q.Publish(ctxT(t), "test1", "message1", nil)
	require.NoError(t, err)
	m := <-got
	require.Equal(t, id, m.ID)
	require.Equal(t, "test1", m.Channel)
	require.JSONEq(t, `"message1"`, string(m.Payload))
	require.Equal(t, 0, m.Retried)
	require.Equal(t, queue.DefaultTimeout, m.Options.Timeout)
	require.Equal(t, 0, m.Options.MaxRetries)
	require.Eventually(t, func() bool { s, _, _ := jobState(t, db, id); return s == "completed" }, waitFor, 10*time.Millisecond)
	require.Empty(t, got)
}
