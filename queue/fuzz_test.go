package queue_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/queue"
)

// FuzzChannelName feeds arbitrary channel names to Subscribe and Publish.
// The empty name returns ErrEmptyChannel; every other name either round-trips
// (the subscriber of exactly that name gets the message, with Message.Channel
// equal to it) or is refused with one of the package's errors, writing
// nothing. Never a raw SQL error, never a message lost or sent elsewhere.
func FuzzChannelName(f *testing.F) {
	for _, c := range append(pgtest.HostileNames(),
		"plain",
		"'; DROP TABLE pgcoord.river_job; --",
		strings.Repeat("c", 200),
		strings.Repeat("ü", 5000),
	) {
		f.Add(c)
	}
	ctx := context.Background()
	db := pgtest.NewDB(f)
	q, err := queue.New(db.Pool, &queue.Config{AppName: "fuzz"})
	require.NoError(f, err)
	require.NoError(f, q.Start(ctx))
	f.Cleanup(func() { _ = q.Stop(context.Background()) })
	table := pgx.Identifier{db.Schema, "river_job"}.Sanitize()
	got := make(chan queue.Message, 1)

	f.Fuzz(func(t *testing.T, channel string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var before int
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&before))

		err := q.Subscribe(ctx, channel, queue.Consumer{Concurrency: 1, Process: func(ctx context.Context, m queue.Message) error {
			got <- m
			return nil
		}})
		if channel == "" || !utf8.ValidString(channel) || strings.ContainsRune(channel, 0) {
			// Names that cannot round-trip are refused by both calls, and
			// nothing is written.
			require.True(t, isQueueError(err), "Subscribe(%q): %v", channel, err)
			_, err = q.Publish(ctx, channel, 1, nil)
			require.True(t, isQueueError(err), "Publish(%q): %v", channel, err)
			var after int
			require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&after))
			require.Equal(t, before, after, "nothing written on rejection")
			return
		}
		require.NoError(t, err)
		defer func() { require.NoError(t, q.Unsubscribe(context.Background(), channel)) }()

		id, err := q.Publish(ctx, channel, map[string]string{"c": "payload"}, nil)
		if err != nil {
			var after int
			require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&after))
			require.Equal(t, before, after, "nothing written on rejection")
			require.True(t, isQueueError(err), "channel %q: want a typed error, got %v", channel, err)
			return
		}
		select {
		case m := <-got:
			require.Equal(t, id, m.ID)
			require.Equal(t, channel, m.Channel, "channel name round-trips")
			require.JSONEq(t, `{"c":"payload"}`, string(m.Payload))
		case <-ctx.Done():
			t.Fatalf("message on %q never processed", channel)
		}
	})
}

func isQueueError(err error) bool {
	for _, s := range []error{queue.ErrEmptyChannel, queue.ErrInvalidChannel, queue.ErrInvalidOptions, queue.ErrInvalidPayload, queue.ErrPayloadTooLarge} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}
