package listen_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/listen"
)

// FuzzPublish feeds arbitrary channel names and payload bytes to Publish. A
// valid channel (non-empty UTF-8 without NUL) with a valid JSON payload is
// written exactly as given, under exactly that channel name; anything else is
// rejected with one of the package's sentinel errors and writes nothing. No
// input reaches SQL as anything but a parameter. One database per fuzz target.
func FuzzPublish(f *testing.F) {
	seeds := []struct{ channel, payload string }{
		{"plain", `{"a":1}`},
		{"", `1`},
		{"'; DROP TABLE pgcoord.messages; --", `"'; DROP TABLE pgcoord.cache_entries; --"`},
		{`"; NOTIFY x; --`, `null`},
		{"quote'n\"dbl", `"\u0000"`},
		{"nul\x00inside", `true`},
		{"bad\xff\xfeutf8", `[1,2,3]`},
		{"頻道 ✓", `{"k":"\ud83d\ude00"}`},
		{"$1", `{`},
		{"\\", "\xff"},
		{strings.Repeat("long", 5000), `"` + strings.Repeat("x", 10000) + `"`},
		{"big", `"` + strings.Repeat("y", 1<<20) + `"`},
		{"sync.x", ` 1 `},
		{"ws", ""},
	}
	for _, s := range seeds {
		f.Add(s.channel, []byte(s.payload))
	}
	db := pgtest.NewDB(f)
	ps, err := listen.New(db.Pool, &listen.Config{AppName: "fuzz", PruneInterval: -1})
	require.NoError(f, err)
	f.Cleanup(func() { _ = ps.Close(context.Background()) })
	table := pgx.Identifier{db.Schema, "messages"}.Sanitize()

	f.Fuzz(func(t *testing.T, channel string, payload []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var before int64
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM `+table).Scan(&before))

		err := ps.Publish(ctx, channel, json.RawMessage(payload), nil)

		validChannel := channel != "" && utf8.ValidString(channel) && !strings.ContainsRune(channel, 0)
		validPayload := utf8.Valid(payload) && json.Valid(payload)
		var rows int
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM `+table+` WHERE id > $1`, before).Scan(&rows))
		switch {
		case !validChannel:
			require.ErrorIs(t, err, listen.ErrInvalidChannel)
		case !validPayload && len(payload) > listen.DefaultMaxPayloadBytes:
			// Either check may come first.
			require.True(t, errors.Is(err, listen.ErrInvalidPayload) || errors.Is(err, listen.ErrPayloadTooLarge), "got %v", err)
		case !validPayload:
			require.ErrorIs(t, err, listen.ErrInvalidPayload)
		case len(payload) > listen.DefaultMaxPayloadBytes:
			require.ErrorIs(t, err, listen.ErrPayloadTooLarge)
		default:
			require.NoError(t, err)
			var gotChannel, gotPayload string
			require.NoError(t, db.Pool.QueryRow(ctx, `SELECT channel, payload::text FROM `+table+` WHERE id > $1`, before).Scan(&gotChannel, &gotPayload))
			require.Equal(t, channel, gotChannel)
			require.Equal(t, string(payload), gotPayload, "payload stored byte for byte")
			require.Equal(t, 1, rows)
			return
		}
		if !validChannel {
			_, serr := ps.Subscribe(ctx, channel, func(context.Context, listen.Message) error { return nil }, nil)
			require.ErrorIs(t, serr, listen.ErrInvalidChannel, "Subscribe refuses it too")
		}
		require.True(t, isSentinel(err), "typed error, got %v", err)
		require.Zero(t, rows, "nothing written on rejection")
	})
}

func isSentinel(err error) bool {
	for _, s := range []error{listen.ErrInvalidChannel, listen.ErrInvalidPayload, listen.ErrPayloadTooLarge} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}
