package listen

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// encodeFull is the whole notification of ms as a publisher's statement
// sends it: the SQL side (sqlHead) written in Go.
func encodeFull(kind byte, sender string, ids []int64, xid uint64, at time.Time, ms []wireOut) string {
	if kind == kindInline {
		return "I" + head(ids[0], xid, at) + inlineRest(ms[0], sender)
	}
	var sb strings.Builder
	sb.WriteString(batchPrefix(kind, sender))
	for i, m := range ms {
		sb.WriteString(head(ids[i], xid, at) + entryRest(kind, m))
	}
	return sb.String()
}

// FuzzWireRoundTrip: every message a publisher encodes, inline or in a
// batch of either version, decodes to the same fields.
func FuzzWireRoundTrip(f *testing.F) {
	f.Add(int64(1), uint64(2), int64(3), false, false, "inst", "ch", []byte(`{"a":1}`), "", "", uint8(0))
	f.Add(int64(-1), uint64(1<<63), int64(-5), true, true, "", "", []byte(``), "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", uint8(3))
	f.Add(int64(9), uint64(0), int64(0), true, false, "a:b,c", ":,:", []byte("R1,2:\x00\xff"), "k:", ",v", uint8(1))
	f.Add(int64(7), uint64(7), int64(1e15), false, true, "頻道", "✓", []byte(`"`+strings.Repeat("x", 7700)+`"`), "", "", uint8(2))
	f.Fuzz(func(t *testing.T, id int64, xid uint64, us int64, skip, only bool, sender, channel string, payload []byte, hk, hv string, n uint8) {
		at := time.UnixMicro(us)
		m := wireOut{channel: channel, payload: payload, skipSelf: skip, onlySelf: only}
		if hk != "" && utf8.ValidString(hk) && utf8.ValidString(hv) {
			m.headers = map[string]string{hk: hv}
		}
		ms := make([]wireOut, int(n%4)+1)
		ids := make([]int64, len(ms))
		for i := range ms {
			ms[i], ids[i] = m, id+int64(i)
		}
		check := func(kind byte, want int) {
			nt, err := decodeNotification(encodeFull(kind, sender, ids, xid, at, ms[:want]))
			require.NoError(t, err)
			require.Equal(t, byte(kindInline), nt.kind)
			require.Len(t, nt.envs, want)
			for i, e := range nt.envs {
				require.Equal(t, ids[i], e.msg.ID)
				require.Equal(t, xid, e.xid)
				require.Equal(t, us, e.msg.PublishedAt.UnixMicro())
				require.Equal(t, sender, e.msg.Sender)
				require.Equal(t, channel, e.msg.Channel)
				require.Equal(t, string(payload), string(e.msg.Payload))
				require.Equal(t, [2]bool{skip, only}, [2]bool{e.skipSelf, e.onlySelf})
				if kind == kindMulti {
					require.Equal(t, m.headers, e.headers)
				}
			}
		}
		if inlineRest(m, sender) != "" {
			check(kindInline, 1)
		}
		if m.headers == nil {
			check(kindBatch, len(ms))
		}
		check(kindMulti, len(ms))
		require.Equal(t, m.headers != nil, batchKind(ms) == kindMulti)

		nt, err := decodeNotification("R" + strconv.FormatInt(id, 10) + "," + strconv.FormatUint(xid, 10))
		require.NoError(t, err)
		require.Equal(t, notification{kind: kindRef, id: id, xid: xid}, nt)
	})
}

func TestDecodeMalformedAndUnknown(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"I", "I1,2,3:x", "Ia,2,3,0,0,0:", "I1,2,3,0,5,5:short", "I1,2,3,0,-1,0:",
		"R1", "Rx,1", "R1,x", "B", "B5:ab", "B1:a1,2,3,0,9,9:x", "B1:ax,2,3,0,0,0:", "B1:a1,2,3,0,0,0",
		"M1:a1,2,3,0,0,4,0:null", "M1:a1,2,3,0,0,3,0:[1]", "M1:a1,2,3,0,0,0,4:x", "M1:a1,2,3,0,0,0:"} {
		_, err := decodeNotification(p)
		require.ErrorIs(t, err, errMalformed, p)
		require.False(t, isWake(p), p)
	}
	for _, p := range []string{"", "W", "X1,2", "v3:anything"} { // a kind a listener does not know is a wake-up
		nt, err := decodeNotification(p)
		require.NoError(t, err, p)
		require.Equal(t, byte(kindWake), nt.kind, p)
		require.True(t, isWake(p), p)
	}
}

// TestWireSQLMatchesGo: the SQL half of the encoding (sqlHead, sqlRef)
// writes what head and parseRef expect.
func TestWireSQLMatchesGo(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	at := time.Date(2026, 1, 2, 3, 4, 5, 678901000, time.UTC)
	var gotHead, gotRef string
	require.NoError(t, db.Pool.QueryRow(context.Background(),
		`SELECT `+sqlHead+`, `+sqlRef+` FROM (SELECT $1::bigint AS id, $2::text::xid8 AS xid, $3::timestamptz AS published_at) m`,
		int64(123456789012), "98765432109", at).Scan(&gotHead, &gotRef))
	require.Equal(t, head(123456789012, 98765432109, at), gotHead)
	require.Equal(t, "R123456789012,98765432109", gotRef)
}
