package listen

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// TestOrderAcrossCatchUpPages: a publisher's message whose notification
// arrives while a catch-up of several pages is under way, above the
// catch-up's cursor, is left to the catch-up (handle does not deliver it)
// and delivered once, after that publisher's older messages the catch-up
// had not read yet: whether it committed before the catch-up's first page
// or after it (then it is not in the snapshot the ledger moves to), inline
// or by id, and when the connection is lost before the next page (the
// catch-up resumes on the new one).
func TestOrderAcrossCatchUpPages(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                string
		afterFirstPage, big bool
		reconnect           bool
	}{
		{name: "inline, committed before the first page"},
		{name: "inline, committed after the first page", afterFirstPage: true},
		{name: "by id, committed after the first page", afterFirstPage: true, big: true},
		{name: "inline, committed after the first page, connection lost", afterFirstPage: true, reconnect: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			db := pgtest.NewDB(t)
			pub := started(t, db, "inst-pub", nil)
			sub := instance(t, db, "inst-sub", nil)
			got := subscribe(t, sub, "ch", nil)
			l := newListener(sub) // the test plays the listener, to handle the notification between two pages
			conn, _, err := l.connect(ctx, true, nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = conn.Close(context.Background()) })

			const older = pageSize + 100
			tx, err := pub.pool.Begin(ctx)
			require.NoError(t, err)
			defer tx.Rollback(ctx) //nolint:errcheck
			for i := range older {
				require.NoError(t, pub.PublishTx(ctx, tx, "ch", i, nil))
			}
			require.NoError(t, tx.Commit(ctx))
			fresh := `"fresh"`
			if tc.big {
				fresh = `"fresh` + strings.Repeat("x", inlineLimit) + `"`
			}
			publishFresh := func() { require.NoError(t, pub.Publish(ctx, "ch", []byte(fresh), nil)) }
			if !tc.afterFirstPage {
				publishFresh()
			}

			c := l.newCatchUp()
			done, err := l.page(ctx, conn, c, false)
			require.NoError(t, err)
			require.False(t, done, "the catch-up takes more than one page")
			if tc.afterFirstPage {
				publishFresh()
			}
			nt := nextMessageNotification(ctx, t, conn)
			xid, id := nt.xid, nt.id
			if nt.kind == kindInline {
				xid, id = nt.envs[0].xid, nt.envs[0].msg.ID
			}
			require.Equal(t, tc.big, nt.kind == kindRef)
			require.False(t, c.passed(xid, id), "the message is above the catch-up's cursor: handle leaves it to the catch-up")
			require.NoError(t, l.handle(ctx, conn, nt, c)) // as serve does between pages
			if tc.reconnect {
				require.NoError(t, conn.Close(ctx))
				conn, c, err = l.connect(ctx, false, c)
				require.NoError(t, err)
			}
			for c != nil { // as serve does
				done, err := l.page(ctx, conn, c, false)
				require.NoError(t, err)
				switch {
				case done && c.resumed:
					c = l.newCatchUp()
				case done:
					c = nil
				}
			}
			msgs := got.waitLen(t, older+1)
			require.Len(t, msgs, older+1)
			require.Equal(t, fresh, string(msgs[older].Payload), "the message overtook older ones of its publisher")
			require.True(t, sub.led.seen(id, xid), "the ledger records the message as delivered")
		})
	}
}

// nextMessageNotification waits for the next notification on conn that is
// not a wake-up and decodes it.
func nextMessageNotification(ctx context.Context, t *testing.T, conn *pgx.Conn) notification {
	t.Helper()
	for {
		n, err := conn.WaitForNotification(ctx)
		require.NoError(t, err)
		if isWake(n.Payload) {
			continue
		}
		nt, err := decodeNotification(n.Payload)
		require.NoError(t, err)
		return nt
	}
}
