//go:build pgcoord_measure

package listen

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// TestMeasurePinnedBacklog is not part of the suite (build tag
// pgcoord_measure): it grows a log behind a pinned xmin to 5 million rows,
// in steps, and after each step measures how long a fresh message takes to
// reach another instance, inline (Publish) and by wake-up (PublishTx).
//
//	go test -tags pgcoord_measure -run TestMeasurePinnedBacklog -v -timeout 60m ./listen/
func TestMeasurePinnedBacklog(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDB(t)
	pin, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer pin.Rollback(ctx) //nolint:errcheck
	_, err = pin.Exec(ctx, `SELECT pg_current_xact_id()`)
	require.NoError(t, err)
	pub := started(t, db, "inst-pub", &Config{PollInterval: time.Second})
	sub := instance(t, db, "inst-sub", &Config{PollInterval: time.Second})
	got := make(chan string, 16)
	_, err = sub.Subscribe(ctx, "ch", func(_ context.Context, m Message) error { got <- string(m.Payload); return nil }, nil)
	require.NoError(t, err)
	require.NoError(t, sub.Start(ctx))

	wait := func(want string) time.Duration {
		t0 := time.Now()
		for {
			select {
			case p := <-got:
				if p == want {
					return time.Since(t0)
				}
			case <-time.After(5 * time.Minute):
				t.Fatalf("%s not delivered", want)
			}
		}
	}
	total := 0
	for step := 1; total < 5_000_000; step++ {
		for range 2 {
			insertBacklog(t, db, 500_000)
			total += 500_000
		}
		// The listener reads the new rows once; wait until it has.
		tx, err := pub.pool.Begin(ctx)
		require.NoError(t, err)
		require.NoError(t, pub.PublishTx(ctx, tx, "ch", fmt.Sprintf("caught-up-%d", step), nil))
		require.NoError(t, tx.Commit(ctx))
		catchUp := wait(fmt.Sprintf(`"caught-up-%d"`, step))
		var worstInline, worstTx time.Duration
		for i := range 5 {
			t0 := time.Now()
			require.NoError(t, pub.Publish(ctx, "ch", fmt.Sprintf("inline-%d-%d", step, i), nil))
			worstInline = max(worstInline, wait(fmt.Sprintf(`"inline-%d-%d"`, step, i))+time.Since(t0)-time.Since(t0))
			tx, err := pub.pool.Begin(ctx)
			require.NoError(t, err)
			t0 = time.Now()
			require.NoError(t, pub.PublishTx(ctx, tx, "ch", fmt.Sprintf("tx-%d-%d", step, i), nil))
			require.NoError(t, tx.Commit(ctx))
			worstTx = max(worstTx, wait(fmt.Sprintf(`"tx-%d-%d"`, step, i)))
		}
		explainPoll(t, sub)
		t.Logf("backlog behind pinned xmin %8d rows: first catch-up of the new rows %v; fresh message worst of 5: inline %v, by wake-up %v; ids kept %d",
			total, catchUp.Round(time.Millisecond), worstInline.Round(time.Millisecond), worstTx.Round(time.Millisecond), sub.led.size())
	}
}

// explainPoll logs EXPLAIN ANALYZE of the page a poll would read now, on a
// connection configured as the listener's.
func explainPoll(t *testing.T, ps *PubSub) {
	ctx := context.Background()
	cfg := ps.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
	cfg.RuntimeParams["enable_bitmapscan"] = "off"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	require.NoError(t, err)
	defer conn.Close(ctx) //nolint:errcheck
	snap, _, _, _ := ps.led.state()
	rows, err := conn.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+ps.sql.page, ps.cfg.AppName, ps.cfg.InstanceID,
		strconv.FormatUint(snap.xmax, 10), snap.xipFrom(0), "0", int64(0), pageSize, int64(-1))
	require.NoError(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	t.Logf("poll page plan:\n%s", strings.Join(lines, "\n"))
}
