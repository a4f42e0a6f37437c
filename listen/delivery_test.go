package listen

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDebounce(t *testing.T) {
	ctx, _, a, b := setupPair(t)
	opts := &SubscribeOpts{Debounce: 300 * time.Millisecond}
	first := subscribe(t, b, "ch", opts)
	second := subscribe(t, b, "ch", opts) // each debounced subscriber gets its own call
	plain := subscribe(t, b, "ch", nil)

	var wg sync.WaitGroup
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := "message1"
			if i%2 == 1 {
				p = "message2"
			}
			require.NoError(t, a.Publish(ctx, "ch", p, nil))
		}()
	}
	wg.Wait()
	plain.waitLen(t, 12)
	for _, g := range []*inbox{first, second} {
		g.waitLen(t, 2)
	}
	// A barrier through a debounced subscriber: once it fired, every call
	// for the burst (published earlier, same quiet period) has fired too.
	barrier(t, a, first, "ch")
	barrier(t, a, second, "ch")
	for _, g := range []*inbox{first, second} {
		require.ElementsMatch(t, []string{`"message1"`, `"message2"`}, g.nonBarrier())
	}
}

func TestLargePayload(t *testing.T) {
	ctx, db, a, b := setupPair(t)
	got := subscribe(t, b, "ch", nil)

	// Exactly 1 MiB of JSON: the default maximum.
	big := `"` + strings.Repeat("x", DefaultMaxPayloadBytes-2) + `"`
	require.Len(t, big, DefaultMaxPayloadBytes)
	require.NoError(t, a.Publish(ctx, "ch", json.RawMessage(big), nil))
	// Just above the inline limit, by reference.
	mid := `"` + strings.Repeat("é", 5000) + `"`
	require.NoError(t, a.Publish(ctx, "ch", json.RawMessage(mid), nil))
	msgs := got.waitLen(t, 2)
	require.Equal(t, big, string(msgs[0].Payload))
	require.Equal(t, mid, string(msgs[1].Payload))

	// One byte more: ErrPayloadTooLarge and nothing written.
	tooBig := `"` + strings.Repeat("x", DefaultMaxPayloadBytes-1) + `"`
	require.ErrorIs(t, a.Publish(ctx, "ch", json.RawMessage(tooBig), nil), ErrPayloadTooLarge)
	require.ErrorIs(t, a.Publish(ctx, "ch", strings.Repeat("y", DefaultMaxPayloadBytes), nil), ErrPayloadTooLarge)
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pgcoord.messages`).Scan(&n))
	require.Equal(t, 2, n)

	// A smaller configured maximum.
	c := started(t, db, "inst-c", &Config{MaxPayloadBytes: 10})
	require.ErrorIs(t, c.Publish(ctx, "ch", "0123456789", nil), ErrPayloadTooLarge)
	require.NoError(t, c.Publish(ctx, "ch", "01234567", nil))
}

func TestOddChannelNames(t *testing.T) {
	ctx, _, a, b := setupPair(t)
	names := []string{
		`with "double" quotes`, `it's`, "with spaces  and\ttabs", strings.Repeat("n", 200),
		"ünïcødé 频道 🚀", `"; DROP TABLE messages; --`, "a:b,c", "sync.x", strings.Repeat("長", 3000),
	}
	boxes := map[string]*inbox{}
	for _, n := range names {
		boxes[n] = subscribe(t, b, n, nil)
	}
	for _, n := range names {
		require.NoError(t, a.Publish(ctx, n, n, nil))
	}
	for _, n := range names {
		msgs := boxes[n].waitLen(t, 1)
		want, _ := json.Marshal(n)
		require.Equal(t, string(want), string(msgs[0].Payload))
		require.Equal(t, n, msgs[0].Channel)
	}
	for _, n := range names {
		barrier(t, a, boxes[n], n)
		require.Len(t, boxes[n].nonBarrier(), 1, "channel %q", n)
	}
}

func TestBadInput(t *testing.T) {
	ctx, db := setup(t)
	a := started(t, db, "inst-a", nil)
	h := (&inbox{}).handle

	for _, ch := range []string{"", "nul\x00byte", "bad\xffutf8"} {
		require.ErrorIs(t, a.Publish(ctx, ch, 1, nil), ErrInvalidChannel, "%q", ch)
		_, err := a.Subscribe(ctx, ch, h, nil)
		require.ErrorIs(t, err, ErrInvalidChannel, "%q", ch)
	}
	for _, p := range []any{make(chan int), math.NaN(), json.RawMessage(`{"a":`), []byte("not json"), json.RawMessage("\"\xff\"")} {
		require.ErrorIs(t, a.Publish(ctx, "ch", p, nil), ErrInvalidPayload, "%v", p)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, a.Publish(cancelled, "ch", 1, nil), context.Canceled)
	_, err := a.Subscribe(cancelled, "ch", h, nil)
	require.ErrorIs(t, err, context.Canceled)
	_, err = a.Subscribe(ctx, "ch", nil, nil)
	require.Error(t, err)

	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pgcoord.messages`).Scan(&n))
	require.Zero(t, n)

	_, err = New(nil, nil)
	require.Error(t, err)
	for _, c := range []Config{{Schema: "Bad-Schema"}, {AppName: "a\x00"}, {MaxPayloadBytes: -1}, {BufferSize: -1}} {
		_, err := New(db.Pool, &c)
		require.Error(t, err, "%+v", c)
	}
}

func TestAppsIsolated(t *testing.T) {
	ctx, db := setup(t)
	a1 := started(t, db, "inst-a1", &Config{AppName: "app1"})
	b1 := started(t, db, "inst-b1", &Config{AppName: "app1"})
	a2 := started(t, db, "inst-a2", &Config{AppName: "app2"})
	b2 := started(t, db, "inst-b2", &Config{AppName: "app2"})
	g1 := subscribe(t, b1, "ch", nil)
	g2 := subscribe(t, b2, "ch", nil)
	require.NoError(t, a1.Publish(ctx, "ch", "for-app1", nil))
	require.NoError(t, a2.Publish(ctx, "ch", "for-app2", nil))
	// A transaction publishing for app1 wakes only app1.
	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, a1.PublishTx(ctx, tx, "ch", "tx-app1", nil))
	require.NoError(t, tx.Commit(ctx))
	g1.waitPayload(t, `"tx-app1"`)
	barrier(t, a1, g1, "ch")
	barrier(t, a2, g2, "ch")
	require.Equal(t, []string{`"for-app1"`, `"tx-app1"`}, g1.nonBarrier())
	require.Equal(t, []string{`"for-app2"`}, g2.nonBarrier())
	require.NotEqual(t, a1.physChannel, a2.physChannel)
}

func TestHandlerErrorsAndPanics(t *testing.T) {
	ctx, _, a, b := setupPair(t)
	_, err := b.Subscribe(ctx, "ch", func(context.Context, Message) error { panic("boom") }, nil)
	require.NoError(t, err)
	_, err = b.Subscribe(ctx, "ch", func(context.Context, Message) error { return fmt.Errorf("failed") }, nil)
	require.NoError(t, err)
	got := subscribe(t, b, "ch", nil)
	for i := range 3 {
		require.NoError(t, a.Publish(ctx, "ch", i, nil))
	}
	got.waitLen(t, 3)
	waitState(t, b, waitFor, func() bool { return b.Stats().HandlerErrors == 6 })
	require.True(t, b.Healthy())
}

func TestCloseDuringBurst(t *testing.T) {
	ctx, _, a, b := setupPair(t)
	var closed, after atomic.Bool
	var calls atomic.Int64
	for _, d := range []time.Duration{0, 20 * time.Millisecond} {
		_, err := b.Subscribe(ctx, "ch", func(context.Context, Message) error {
			if closed.Load() {
				after.Store(true)
			}
			calls.Add(1)
			return nil
		}, &SubscribeOpts{Debounce: d})
		require.NoError(t, err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				if err := a.Publish(ctx, "ch", fmt.Sprintf("%d-%d", g, i), nil); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	waitState(t, b, waitFor, func() bool { return calls.Load() > 50 })
	require.NoError(t, b.Close(ctx))
	closed.Store(true)
	// Keep publishing for a while after Close: nothing reaches b.
	n := a.Stats().Published
	waitState(t, a, waitFor, func() bool { return a.Stats().Published > n+100 })
	// Closing the publisher during its burst ends every Publish with ErrClosed.
	require.NoError(t, a.Close(ctx))
	wg.Wait()
	close(errs)
	for err := range errs {
		require.ErrorIs(t, err, ErrClosed)
	}
	require.False(t, after.Load(), "a handler ran after Close returned")
}

// TestOverflowRecovered: a blocked handler overflows its buffer; the dropped
// messages come back from the log, in order, after OnResync, and other
// subscriptions are not delayed.
func TestOverflowRecovered(t *testing.T) {
	ctx, _, a, b := setupPair(t)

	release := make(chan struct{})
	var (
		mu     sync.Mutex
		events []string
	)
	_, err := b.Subscribe(ctx, "ch", func(ctx context.Context, m Message) error {
		if string(m.Payload) == "0" {
			<-release
		}
		mu.Lock()
		events = append(events, string(m.Payload))
		mu.Unlock()
		return nil
	}, &SubscribeOpts{BufferSize: 3, OnResync: func(context.Context) {
		mu.Lock()
		events = append(events, "resync")
		mu.Unlock()
	}})
	require.NoError(t, err)
	fast := subscribe(t, b, "ch", nil)

	const n = 40
	for i := range n {
		require.NoError(t, a.Publish(ctx, "ch", i, nil))
	}
	fast.waitLen(t, n) // not held up by the blocked subscription
	waitState(t, b, waitFor, func() bool { return b.Stats().Dropped > 0 })
	close(release)
	waitState(t, b, waitFor, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(events) == n+1
	})
	mu.Lock()
	defer mu.Unlock()
	// Every message once, in order, with one resync before the first
	// recovered message.
	var got []string
	resyncs := 0
	for _, e := range events {
		if e == "resync" {
			resyncs++
			continue
		}
		got = append(got, e)
	}
	require.Equal(t, 1, resyncs)
	var want []string
	for i := range n {
		want = append(want, fmt.Sprint(i))
	}
	require.Equal(t, want, got)
	st := b.Stats()
	require.Positive(t, st.Dropped)
	require.Equal(t, st.Dropped, st.Recovered)
	require.Zero(t, st.Lost)
}
