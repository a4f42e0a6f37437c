package queue_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/migrations"
	"github.com/pgcoord/pgcoord/queue"
)

// River's own tools read a pgcoord message: the queue is named after the
// channel and the payload is a JSON value in river_job.args that SQL can
// filter on. A payload jsonb cannot hold (\u0000) keeps its exact text in
// args.payload_text. Options at their defaults are left out of args (a
// smaller row and fewer args index entries for every state change).
func TestRiverJobRowIsReadable(t *testing.T) {
	db, ctx := open(t), ctxT(t)
	q := newQueue(t, db, nil, &queue.Config{AppName: "main"})
	id, err := q.Publish(ctx, "send_email", map[string]any{"to": "a@example.com", "n": 7}, &queue.PublishOpts{MaxRetries: 2})
	require.NoError(t, err)
	nul, err := q.Publish(ctx, "send_email", json.RawMessage(`"nul \u0000"`), nil)
	require.NoError(t, err)
	shared, err := q.Publish(ctx, "audit", 1, &queue.PublishOpts{Shared: true})
	require.NoError(t, err)

	var gotID int64
	var name, to, args string
	var maxAttempts int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT id, queue, args->'payload'->>'to', args::text, max_attempts
		FROM pgcoord.river_job WHERE args->'payload'->>'to' = 'a@example.com'`).Scan(&gotID, &name, &to, &args, &maxAttempts))
	t.Logf("river_job row: id=%d queue=%s max_attempts=%d args=%s", gotID, name, maxAttempts, args)
	require.Equal(t, id, gotID)
	require.Equal(t, "main-send_email", name)
	require.Equal(t, "a@example.com", to)
	require.Equal(t, 2+1+queue.DefaultMaxRescues, maxAttempts, "max_attempts = MaxRetries + 1 + MaxRescues")
	require.JSONEq(t, `{"channel":"send_email","payload":{"n":7,"to":"a@example.com"},"max_retries":2}`, args, "the default timeout is left out")

	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT args->>'payload_text' FROM pgcoord.river_job WHERE id = $1`, nul).Scan(&to))
	require.Equal(t, `"nul \u0000"`, to)
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT queue FROM pgcoord.river_job WHERE id = $1`, shared).Scan(&name))
	require.Equal(t, "audit", name)

	got := make(chan queue.Message, 2)
	require.NoError(t, q.Subscribe(ctx, "send_email", queue.Consumer{Process: func(_ context.Context, m queue.Message) error { got <- m; return nil }}))
	start(t, q)
	require.Equal(t, `{"n":7,"to":"a@example.com"}`, string(receive(t, got).Payload), "compact, jsonb's key order")
	require.Equal(t, `"nul \u0000"`, string(receive(t, got).Payload), "byte for byte")
}

// Migration 12 converts messages stored before it: payload strings become
// JSON values (payload_text when jsonb cannot hold them) and hashed queue
// names become readable where the channel allows, so a new instance
// consumes them. Down restores the old form; up again converts again.
func TestMigrationMakesStoredMessagesReadable(t *testing.T) {
	db, ctx := open(t), ctxT(t)
	_, err := migrations.Down(ctx, db.Pool, &migrations.Options{TargetVersion: 11})
	require.NoError(t, err)

	long := "app_" + strings.Repeat("x", 30) // the legacy prefix of its channels was cut
	legacy := []struct {
		app, channel string
		shared       bool
		payload      string
		want         string // queue name after migration
	}{
		{"main", "test1", false, `{"x": 1, "b": [1]}`, "main-test1"},
		{"", "audit", true, `"nul \u0000"`, "audit"},
		{long, "channel_" + strings.Repeat("y", 20), false, `2`, long + "-channel_" + strings.Repeat("y", 20)},
		{"main", "Not.Readable", false, `null`, queue.HashedQueueName("main", "Not.Readable", false)},
	}
	for _, l := range legacy {
		args, err := json.Marshal(map[string]any{"channel": l.channel, "payload": l.payload, "timeout_ms": 15000, "max_retries": 0})
		require.NoError(t, err)
		_, err = db.Pool.Exec(ctx, `INSERT INTO pgcoord.river_job (args, kind, max_attempts, queue) VALUES ($1, 'pgcoord.queue.message', 4, $2)`,
			args, queue.HashedQueueName(l.app, l.channel, l.shared))
		require.NoError(t, err)
	}
	type row struct{ queue, payload, text string }
	rows := func() []row {
		r, err := db.Pool.Query(ctx, `SELECT queue, coalesce((args->'payload')::text, ''), coalesce(args->>'payload_text', '') FROM pgcoord.river_job ORDER BY id`)
		require.NoError(t, err)
		defer r.Close()
		var out []row
		for r.Next() {
			var x row
			require.NoError(t, r.Scan(&x.queue, &x.payload, &x.text))
			out = append(out, x)
		}
		require.NoError(t, r.Err())
		return out
	}
	before := rows()

	for range 2 { // up, down, up
		_, err = migrations.Up(ctx, db.Pool, nil)
		require.NoError(t, err)
		after := rows()
		for i, l := range legacy {
			require.Equal(t, l.want, after[i].queue, "%+v", l)
		}
		require.JSONEq(t, `{"x": 1, "b": [1]}`, after[0].payload)
		require.Equal(t, `"nul \u0000"`, after[1].text)
		require.Equal(t, `2`, after[2].payload)
		require.Equal(t, `null`, after[3].payload)
		var x int
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pgcoord.river_job WHERE (args->'payload'->>'x')::int = 1`).Scan(&x))
		require.Equal(t, 1, x, "SQL filters on the payload")

		_, err = migrations.Down(ctx, db.Pool, &migrations.Options{TargetVersion: 11})
		require.NoError(t, err)
		restored := rows()
		for i := range before {
			require.Equal(t, before[i].queue, restored[i].queue)
			require.Empty(t, restored[i].text)
			var was, is string
			require.NoError(t, json.Unmarshal([]byte(before[i].payload), &was))
			require.NoError(t, json.Unmarshal([]byte(restored[i].payload), &is))
			require.JSONEq(t, was, is, "the payload is a JSON string holding the same JSON again")
		}
	}
	_, err = migrations.Up(ctx, db.Pool, nil)
	require.NoError(t, err)

	// A new instance consumes the migrated message of its channel.
	q := newQueue(t, db, nil, &queue.Config{AppName: "main"})
	got := make(chan queue.Message, 1)
	require.NoError(t, q.Subscribe(ctx, "test1", queue.Consumer{Process: func(_ context.Context, m queue.Message) error { got <- m; return nil }}))
	start(t, q)
	require.JSONEq(t, `{"x": 1, "b": [1]}`, string(receive(t, got).Payload))
}

// Options at the package defaults (DefaultTimeout, MaxRetries 0) are left
// out of args, and an absent option means the package default, not the
// consuming instance's Config: a consumer whose Config.DefaultTimeout is 1 s
// still gives such a message 15 s. A publisher's own Config.DefaultTimeout
// is stored.
func TestDefaultOptionsLeftOutOfArgs(t *testing.T) {
	db, ctx := open(t), ctxT(t)
	pub := newQueue(t, db, nil, &queue.Config{AppName: "main"})
	dflt, err := pub.Publish(ctx, "c", 1, &queue.PublishOpts{Timeout: queue.DefaultTimeout})
	require.NoError(t, err)
	pub30 := newQueue(t, db, nil, &queue.Config{AppName: "main", DefaultTimeout: 30 * time.Second})
	long, err := pub30.Publish(ctx, "c", 2, nil)
	require.NoError(t, err)

	argsOf := func(id int64) string {
		var args string
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT args::text FROM pgcoord.river_job WHERE id = $1`, id).Scan(&args))
		return args
	}
	require.JSONEq(t, `{"channel":"c","payload":1}`, argsOf(dflt))
	require.JSONEq(t, `{"channel":"c","payload":2,"timeout_ms":30000}`, argsOf(long))
	st, err := pub.Inspect(ctx, dflt)
	require.NoError(t, err)
	require.Equal(t, queue.DefaultTimeout, st.Options.Timeout)
	require.Equal(t, 0, st.Options.MaxRetries)

	type got struct {
		msg  queue.Message
		left time.Duration
	}
	ran := make(chan got, 2)
	con := newQueue(t, db, nil, &queue.Config{AppName: "main", DefaultTimeout: time.Second})
	require.NoError(t, con.Subscribe(ctx, "c", queue.Consumer{Process: func(ctx context.Context, m queue.Message) error {
		deadline, _ := ctx.Deadline()
		ran <- got{m, time.Until(deadline)}
		return nil
	}}))
	start(t, con)
	for _, want := range []time.Duration{queue.DefaultTimeout, 30 * time.Second} {
		g := receive(t, ran)
		require.Equal(t, want, g.msg.Options.Timeout)
		require.Equal(t, 0, g.msg.Options.MaxRetries)
		require.Greater(t, g.left, 2*time.Second, "the message's own timeout, not the consumer's Config.DefaultTimeout")
	}
}
