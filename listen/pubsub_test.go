package listen

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/txhooks"
)

func TestSubscribeBeforeStart(t *testing.T) {
	ctx, db := setup(t)
	a := instance(t, db, "inst-a", nil)
	b := started(t, db, "inst-b", nil)
	require.False(t, a.Healthy())

	got := subscribe(t, a, "ch", nil)
	// Published before a started: never delivered to a, not even later.
	require.NoError(t, b.Publish(ctx, "ch", "before", nil))
	require.NoError(t, a.Publish(ctx, "ch", "self-before", &PublishOpts{IncludeSelf: true}))

	require.NoError(t, a.Start(ctx))
	require.True(t, a.Healthy())
	require.ErrorIs(t, a.Start(ctx), ErrAlreadyStarted)
	require.NoError(t, b.Publish(ctx, "ch", "message1", nil))
	got.waitLen(t, 1)
	barrier(t, b, got, "ch")
	msgs := got.all()
	require.Len(t, msgs, 2)
	require.JSONEq(t, `"message1"`, string(msgs[0].Payload))
	require.Equal(t, "ch", msgs[0].Channel)
	require.Equal(t, "inst-b", msgs[0].Sender)
	require.NotZero(t, msgs[0].ID)
	require.False(t, msgs[0].PublishedAt.IsZero())
}

func TestSubscribeAfterStart(t *testing.T) {
	ctx, db := setup(t)
	a := started(t, db, "inst-a", nil)
	got := subscribe(t, a, "ch", nil)
	require.NoError(t, a.Publish(ctx, "ch", "message1", &PublishOpts{IncludeSelf: true}))
	require.Equal(t, `"message1"`, string(got.waitLen(t, 1)[0].Payload))
	require.Equal(t, int64(1), a.Stats().Published)
}

func TestClosed(t *testing.T) {
	ctx, db := setup(t)
	a := started(t, db, "inst-a", nil)
	got := subscribe(t, a, "ch", nil)
	require.NoError(t, a.Close(ctx))
	require.NoError(t, a.Close(ctx)) // twice is fine
	require.False(t, a.Healthy())

	require.ErrorIs(t, a.Publish(ctx, "ch", "x", &PublishOpts{IncludeSelf: true}), ErrClosed)
	_, err := a.Subscribe(ctx, "ch", got.handle, nil)
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, a.Start(ctx), ErrClosed)
	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	require.ErrorIs(t, a.PublishTx(ctx, tx, "ch", "x", nil), ErrClosed)

	// A message from another instance does not reach the closed one.
	b := started(t, db, "inst-b", nil)
	other := subscribe(t, b, "ch", nil)
	require.NoError(t, b.Publish(ctx, "ch", "after-close", &PublishOpts{IncludeSelf: true}))
	other.waitLen(t, 1)
	require.Zero(t, got.len())

	// Close before Start is fine too.
	c := instance(t, db, "inst-c", nil)
	require.NoError(t, c.Close(ctx))
	require.ErrorIs(t, c.Start(ctx), ErrClosed)
}

func TestSelfOptions(t *testing.T) {
	ctx, _, a, b := setupPair(t)
	ga := subscribe(t, a, "ch", nil)
	gb := subscribe(t, b, "ch", nil)

	// Default: others only.
	require.NoError(t, a.Publish(ctx, "ch", "default", nil))
	gb.waitPayload(t, `"default"`)
	// IncludeSelf: everyone.
	require.NoError(t, a.Publish(ctx, "ch", "all", &PublishOpts{IncludeSelf: true}))
	ga.waitPayload(t, `"all"`)
	gb.waitPayload(t, `"all"`)
	// OnlySelf wins over IncludeSelf: the publisher only.
	require.NoError(t, a.Publish(ctx, "ch", "self", &PublishOpts{OnlySelf: true, IncludeSelf: true}))
	ga.waitPayload(t, `"self"`)

	barrier(t, b, ga, "ch")
	barrier(t, a, gb, "ch")
	require.NotContains(t, ga.payloads(), `"default"`)
	require.NotContains(t, gb.payloads(), `"self"`)
	require.Equal(t, 1, count(ga.payloads(), `"all"`))
	require.Equal(t, 1, count(gb.payloads(), `"all"`))
	require.Equal(t, 1, count(ga.payloads(), `"self"`))
}

func count(ss []string, s string) int {
	n := 0
	for _, x := range ss {
		if x == s {
			n++
		}
	}
	return n
}

func TestPayloadRoundTrip(t *testing.T) {
	ctx, _, a, b := setupPair(t)
	got := subscribe(t, b, "ch", nil)

	values := []any{1, []string{"message1"}, map[string]string{"type": "test"}, true, false, nil,
		`with "quotes" and 'single' and \backslash`, "unicode: héllo 世界 🎉", 1.5e300, -0.25}
	raws := []string{`{"b": 1,  "a": [1, 2.50, "x"]}`, `"\u0000 nul escape"`, `{"dup":1,"dup":2}`, "  7  "}
	for _, v := range values {
		require.NoError(t, a.Publish(ctx, "ch", v, nil))
	}
	for _, r := range raws {
		require.NoError(t, a.Publish(ctx, "ch", json.RawMessage(r), nil))
	}
	msgs := got.waitLen(t, len(values)+len(raws))
	require.Len(t, msgs, len(values)+len(raws))
	for i, v := range values {
		want, err := json.Marshal(v)
		require.NoError(t, err)
		require.Equal(t, string(want), string(msgs[i].Payload), "value %d", i)
	}
	for i, r := range raws {
		require.Equal(t, r, string(msgs[len(values)+i].Payload), "raw %d", i)
	}
}

func TestUnsubscribe(t *testing.T) {
	ctx, _, a, b := setupPair(t)
	keep := subscribe(t, b, "ch", nil)
	gone := &inbox{}
	sub, err := b.Subscribe(ctx, "ch", gone.handle, nil)
	require.NoError(t, err)
	require.Equal(t, "ch", sub.Channel())

	require.NoError(t, a.Publish(ctx, "ch", "one", nil))
	gone.waitLen(t, 1)
	sub.Unsubscribe()
	sub.Unsubscribe() // idempotent
	require.NoError(t, a.Publish(ctx, "ch", "two", nil))
	barrier(t, a, keep, "ch")
	require.Equal(t, []string{`"one"`}, gone.nonBarrier())

	// Subscribing the same function again gives a fresh, single delivery.
	sub2, err := b.Subscribe(ctx, "ch", gone.handle, nil)
	require.NoError(t, err)
	require.NoError(t, a.Publish(ctx, "ch", "three", nil))
	// gone's own barrier: each subscription has its own handler queue, so
	// keep seeing a barrier says nothing about gone's earlier messages.
	barrier(t, a, gone, "ch")
	require.Equal(t, []string{`"one"`, `"three"`}, gone.nonBarrier())

	// Two handles of one function are two subscriptions (Go has no function
	// identity): each is called once per message, and each unsubscribes alone.
	twice := &inbox{}
	h1, err := b.Subscribe(ctx, "ch2", twice.handle, nil)
	require.NoError(t, err)
	_, err = b.Subscribe(ctx, "ch2", twice.handle, nil)
	require.NoError(t, err)
	require.NoError(t, a.Publish(ctx, "ch2", "x", nil))
	twice.waitLen(t, 2)
	h1.Unsubscribe()
	require.NoError(t, a.Publish(ctx, "ch2", "y", nil))
	twice.waitLen(t, 3)
	barrier(t, a, twice, "ch2")
	require.Equal(t, []string{`"x"`, `"x"`, `"y"`}, twice.nonBarrier())
	sub2.Unsubscribe()
}

func TestCrossInstanceExactlyOnceThreeInstances(t *testing.T) {
	ctx, db := setup(t)
	names := []string{"inst-a", "inst-b", "inst-c"}
	var pss []*PubSub
	var boxes []*inbox
	for _, n := range names {
		ps := started(t, db, n, nil)
		pss = append(pss, ps)
		boxes = append(boxes, subscribe(t, ps, "ch", nil))
	}
	const per = 100
	done := make(chan error, len(pss))
	for i, ps := range pss {
		go func() {
			for j := range per {
				if err := ps.Publish(ctx, "ch", map[string]int{"from": i, "n": j}, nil); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range pss {
		require.NoError(t, <-done)
	}
	for i, b := range boxes {
		msgs := b.waitLen(t, 2*per)
		// one barrier per other instance makes sure nothing more is coming
		for j, ps := range pss {
			if j != i {
				barrier(t, ps, b, "ch")
			}
		}
		seen := map[int64]int{}
		lastN := map[string]int{}
		for _, m := range b.all() {
			if strings.Contains(string(m.Payload), "barrier") {
				continue
			}
			seen[m.ID]++
			require.NotEqual(t, names[i], m.Sender, "own message delivered")
			var p struct{ From, N int }
			require.NoError(t, json.Unmarshal(m.Payload, &p))
			// Each publisher published sequentially: its messages arrive in order.
			prev, ok := lastN[m.Sender]
			if ok {
				require.Greater(t, p.N, prev, "order from %s", m.Sender)
			}
			lastN[m.Sender] = p.N
		}
		require.Len(t, seen, 2*per, "instance %s: %d messages", names[i], len(msgs))
		for id, n := range seen {
			require.Equal(t, 1, n, "message %d delivered %d times", id, n)
		}
	}
}

func TestPublishTx(t *testing.T) {
	ctx, db, a, b := setupPair(t)
	ga := subscribe(t, a, "ch", nil)
	gb := subscribe(t, b, "ch", nil)

	// Rollback: nothing anywhere, no row.
	tx, err := a.pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, a.PublishTx(ctx, tx, "ch", "rolled-back", &PublishOpts{IncludeSelf: true}))
	require.NoError(t, tx.Rollback(ctx))

	// Commit: delivered once, only after the commit. Several messages in one
	// transaction all arrive, in order.
	tx, err = a.pool.Begin(ctx)
	require.NoError(t, err)
	for _, p := range []string{"c1", "c2", "c3"} {
		require.NoError(t, a.PublishTx(ctx, tx, "ch", p, &PublishOpts{IncludeSelf: true}))
	}
	barrier(t, a, gb, "ch")
	require.NotContains(t, gb.payloads(), `"c1"`)
	require.NoError(t, tx.Commit(ctx))
	gb.waitPayload(t, `"c3"`)
	ga.waitPayload(t, `"c3"`) // plain pgx.Tx: self delivery through the listener

	barrier(t, b, ga, "ch")
	barrier(t, a, gb, "ch")
	for _, g := range []*inbox{ga, gb} {
		require.Equal(t, []string{`"c1"`, `"c2"`, `"c3"`}, g.nonBarrier())
	}
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pgcoord.messages WHERE payload::text = '"rolled-back"'`).Scan(&n))
	require.Zero(t, n)
}

func TestPublishTxHooksLocalDelivery(t *testing.T) {
	ctx, _, a, b := setupPair(t)
	ga := subscribe(t, a, "ch", nil)
	gb := subscribe(t, b, "ch", nil)

	err := txhooks.Run(ctx, a.pool, func(ctx context.Context, tx *txhooks.Tx) error {
		return a.PublishTx(ctx, tx, "ch", "hooked", &PublishOpts{IncludeSelf: true})
	})
	require.NoError(t, err)
	ga.waitPayload(t, `"hooked"`)
	gb.waitPayload(t, `"hooked"`)

	// A rolled-back txhooks transaction delivers nothing, locally either.
	err = txhooks.Run(ctx, a.pool, func(ctx context.Context, tx *txhooks.Tx) error {
		require.NoError(t, a.PublishTx(ctx, tx, "ch", "nope", &PublishOpts{OnlySelf: true}))
		return errors.New("abort")
	})
	require.Error(t, err)
	barrier(t, b, ga, "ch")
	require.Equal(t, 1, count(ga.payloads(), `"hooked"`))
	require.NotContains(t, ga.payloads(), `"nope"`)
	barrier(t, a, gb, "ch")
	require.Equal(t, 1, count(gb.payloads(), `"hooked"`))
}
