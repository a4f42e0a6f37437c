package listen

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPublishBatch drives one batch directly: one statement, one
// transaction, one notification carrying all messages (or a wake-up when
// they do not fit), routed as each asked.
func TestPublishBatch(t *testing.T) {
	ctx, db, a, b := setupPair(t)
	ga := subscribe(t, a, "ch", nil)
	gb := subscribe(t, b, "ch", nil)
	other := subscribe(t, b, "other channel", nil)

	publish := func(reqs ...publishArgs) {
		var batch []*pubReq
		for _, r := range reqs {
			batch = append(batch, &pubReq{ctx: ctx, args: r, done: make(chan error, 1)})
		}
		a.publishBatch(batch)
		for _, r := range batch {
			require.NoError(t, <-r.done)
		}
	}
	publish(
		publishArgs{channel: "ch", payload: []byte(`"b1"`), skipSelf: true},
		publishArgs{channel: "ch", payload: []byte(`{"b2": "\u0000 é"}`)},
		publishArgs{channel: "other channel", payload: []byte(`3`), skipSelf: true},
		publishArgs{channel: "ch", payload: []byte(`"b4"`), onlySelf: true},
	)
	var txs int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(DISTINCT xid) FROM pgcoord.messages`).Scan(&txs))
	require.Equal(t, 1, txs)
	gb.waitLen(t, 2)
	other.waitLen(t, 1)
	ga.waitLen(t, 2)

	// Too large for one notification together: a wake-up, read from the log.
	big := `"` + strings.Repeat("x", 5000) + `"`
	publish(
		publishArgs{channel: "ch", payload: []byte(big), skipSelf: true},
		publishArgs{channel: "ch", payload: []byte(big[:4000] + `"`), skipSelf: true},
	)
	gb.waitLen(t, 4)
	barrier(t, b, ga, "ch")
	barrier(t, a, gb, "ch")
	require.Equal(t, []string{`"b1"`, `{"b2": "\u0000 é"}`, big, big[:4000] + `"`}, gb.nonBarrier())
	require.Equal(t, []string{`{"b2": "\u0000 é"}`, `"b4"`}, ga.nonBarrier())
	require.Equal(t, []string{`3`}, other.nonBarrier())
	require.Equal(t, "inst-a", gb.all()[0].Sender)
	require.Equal(t, "ch", gb.all()[0].Channel)
	require.Equal(t, int64(7), a.Stats().Published) // with the barrier
}

// TestConcurrentPublish: many goroutines publishing at once (batched) each
// get their message delivered exactly once.
func TestConcurrentPublish(t *testing.T) {
	ctx, db, a, b := setupPair(t)
	gb := subscribe(t, b, "ch", nil)
	ga := subscribe(t, a, "ch", nil)
	const n = 400
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 16 {
				require.NoError(t, a.Publish(ctx, "ch", i, &PublishOpts{IncludeSelf: i%2 == 0}))
			}
		}()
	}
	wg.Wait()
	for _, g := range []struct {
		box  *inbox
		want int
	}{{gb, n}, {ga, n / 2}} {
		g.box.waitLen(t, g.want)
		seen := map[int]bool{}
		for _, m := range g.box.all() {
			var i int
			require.NoError(t, json.Unmarshal(m.Payload, &i))
			require.False(t, seen[i], "duplicate %d", i)
			seen[i] = true
		}
	}
	barrier(t, b, ga, "ch")
	barrier(t, a, gb, "ch")
	require.Len(t, gb.nonBarrier(), n)
	require.Len(t, ga.nonBarrier(), n/2)
	var txs int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(DISTINCT xid) FROM pgcoord.messages WHERE payload::text NOT LIKE '"barrier%'`).Scan(&txs))
	t.Logf("%d messages in %d transactions", n, txs)
}
