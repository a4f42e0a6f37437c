package listen

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// TestOrderAcrossCatchUpPages: a publisher's message that arrives inline
// while a catch-up of several pages is under way is delivered after that
// publisher's older messages the catch-up had not read yet.
func TestOrderAcrossCatchUpPages(t *testing.T) {
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
	defer conn.Close(context.Background()) //nolint:errcheck

	const older = pageSize + 100
	tx, err := pub.pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	for i := range older {
		require.NoError(t, pub.PublishTx(ctx, tx, "ch", i, nil))
	}
	require.NoError(t, tx.Commit(ctx))
	require.NoError(t, pub.Publish(ctx, "ch", "fresh", nil))

	c := l.newCatchUp()
	done, err := l.page(ctx, conn, c, false)
	require.NoError(t, err)
	require.False(t, done, "the catch-up takes more than one page")
	for { // as serve does between pages
		n, err := conn.WaitForNotification(ctx)
		require.NoError(t, err)
		if isWake(n.Payload) {
			continue
		}
		nt, err := decodeNotification(n.Payload)
		require.NoError(t, err)
		require.NoError(t, l.handle(ctx, conn, nt, c))
		break
	}
	for !done {
		done, err = l.page(ctx, conn, c, false)
		require.NoError(t, err)
	}
	msgs := got.waitLen(t, older+1)
	require.Len(t, msgs, older+1)
	require.Equal(t, `"fresh"`, string(msgs[older].Payload), "the inline message overtook older ones of its publisher")
}
