package integration_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/pgcache"
	"github.com/pgcoord/pgcoord/queue"
)

// inbox collects what one instance received, per primitive.
type inbox struct {
	mu      sync.Mutex // guards the slices
	ps      []string
	sync    []string
	queue   []string
	changed *pgtest.Signal // notified after each add
}

func (b *inbox) add(list *[]string, payload json.RawMessage) {
	var body struct {
		App string `json:"app"`
	}
	_ = json.Unmarshal(payload, &body)
	b.mu.Lock()
	*list = append(*list, body.App)
	b.mu.Unlock()
	b.changed.Notify()
}

func (b *inbox) snapshot() (ps, syn, q []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.ps...), append([]string(nil), b.sync...), append([]string(nil), b.queue...)
}

// isoPlugin subscribes pub/sub and the queue at Load and receives sync messages.
type isoPlugin struct {
	app.PluginBase
	in *inbox
}

func (p *isoPlugin) Name() string { return "iso" }

func (p *isoPlugin) Load(ctx context.Context, a *app.App) error {
	if _, err := a.PubSub().Subscribe(ctx, "shared-channel", func(_ context.Context, m listen.Message) error {
		p.in.add(&p.in.ps, m.Payload)
		return nil
	}, nil); err != nil {
		return err
	}
	return a.EventQueue().Subscribe(ctx, "shared-queue", queue.Consumer{Concurrency: 1, Process: func(_ context.Context, m queue.Message) error {
		p.in.add(&p.in.queue, m.Payload)
		return nil
	}})
}

func (p *isoPlugin) HandleSyncMessage(_ context.Context, m listen.Message) error {
	p.in.add(&p.in.sync, m.Payload)
	return nil
}

// TestAppIsolation: two apps, two instances each, on one database, using the
// same cache keys, channel names, queue channel and lock key, never see each
// other's data in any primitive.
func TestAppIsolation(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	type inst struct {
		a  *app.App
		p  *isoPlugin
		in *inbox
	}
	var changed pgtest.Signal // any instance received something
	start := func(name, id string) inst {
		in := &inbox{changed: &changed}
		p := &isoPlugin{in: in}
		a, err := app.New(ctx, app.Config{
			Name: name, InstanceID: id, Plugins: []app.Plugin{p},
			Pool:         db.NewPool(t, &pgtest.PoolOptions{AppName: id, MaxConns: 6}),
			Sync:         &listen.SyncConfig{Debounce: -1},
			DefaultCache: &pgcache.CacheConfig{NearCache: true},
		})
		require.NoError(t, err)
		require.NoError(t, a.Start(ctx))
		t.Cleanup(func() { require.NoError(t, a.Stop(context.Background())) })
		return inst{a: a, p: p, in: in}
	}
	a1, a2 := start("alpha", "alpha-1"), start("alpha", "alpha-2")
	b1, b2 := start("beta", "beta-1"), start("beta", "beta-2")
	alpha, beta := map[string]string{"app": "alpha"}, map[string]string{"app": "beta"}

	// Pub/sub, sync messages and the queue: each app publishes on the same
	// names, alpha twice (before and after beta), so alpha's second message
	// arriving means beta's had its chance to leak.
	for _, step := range []struct {
		from *inst
		body map[string]string
	}{{&a1, alpha}, {&b1, beta}, {&a1, alpha}} {
		require.NoError(t, step.from.a.PubSub().Publish(ctx, "shared-channel", step.body, nil))
		require.NoError(t, step.from.p.SendSyncMessage(ctx, step.body))
		_, err := step.from.a.EventQueue().Publish(ctx, "shared-queue", step.body, nil)
		require.NoError(t, err)
	}
	received := func(i inst, ps, syn int) func() bool {
		return func() bool {
			p, s, _ := i.in.snapshot()
			return len(p) >= ps && len(s) >= syn
		}
	}
	changed.WaitUntil(t, 30*time.Second, received(a2, 2, 2), "alpha-2: pub/sub and sync messages")
	changed.WaitUntil(t, 30*time.Second, received(b2, 1, 1), "beta-2: pub/sub and sync messages")
	queueDone := func() bool {
		var n int
		for _, i := range []inst{a1, a2, b1, b2} {
			_, _, q := i.in.snapshot()
			n += len(q)
		}
		return n >= 3
	}
	changed.WaitUntil(t, 30*time.Second, queueDone, "queue messages")
	for _, c := range []struct {
		i    inst
		want string
	}{{a1, "alpha"}, {a2, "alpha"}, {b1, "beta"}, {b2, "beta"}} {
		ps, syn, q := c.i.in.snapshot()
		for _, got := range append(append(ps, syn...), q...) {
			require.Equal(t, c.want, got, "%s received another app's message", c.i.a.InstanceID())
		}
	}
	_, _, qa1 := a1.in.snapshot()
	_, _, qa2 := a2.in.snapshot()
	_, _, qb1 := b1.in.snapshot()
	_, _, qb2 := b2.in.snapshot()
	require.Len(t, append(qa1, qa2...), 2, "alpha's two queue messages ran on alpha")
	require.Len(t, append(qb1, qb2...), 1, "beta's queue message ran on beta")

	// Cache: same key, separate values; Keys and Reset stay in their app.
	require.NoError(t, a1.a.Cache().Set(ctx, "shared-key", "alpha", 0))
	_, ok, err := b2.a.Cache().Get(ctx, "shared-key")
	require.NoError(t, err)
	require.False(t, ok, "beta sees alpha's key")
	require.NoError(t, b1.a.Cache().Set(ctx, "shared-key", "beta", 0))
	v, ok, err := a2.a.Cache().Get(ctx, "shared-key")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "alpha", v)
	keys, err := b2.a.Cache().Keys(ctx, "*")
	require.NoError(t, err)
	require.Equal(t, []string{"shared-key"}, keys)
	ctrA, err := a1.a.Cache().Counter().IncrBy(ctx, "hits", 5)
	require.NoError(t, err)
	ctrB, err := b1.a.Cache().Counter().Incr(ctx, "hits")
	require.NoError(t, err)
	require.Equal(t, int64(5), ctrA)
	require.Equal(t, int64(1), ctrB)
	require.NoError(t, b1.a.Cache().Reset(ctx))
	v, ok, err = a1.a.Cache().Get(ctx, "shared-key")
	require.NoError(t, err)
	require.True(t, ok, "beta's Reset removed alpha's entry")
	require.Equal(t, "alpha", v)

	// Locks: the same key is a different lock in each app.
	la, err := a1.a.Locks().TryAcquire(ctx, "shared-lock", 0)
	require.NoError(t, err)
	lb, err := b1.a.Locks().TryAcquire(ctx, "shared-lock", 0)
	require.NoError(t, err, "alpha's lock blocks beta")
	var lae *advisorylock.LockAcquireError
	_, err = a2.a.Locks().TryAcquire(ctx, "shared-lock", 0)
	require.ErrorAs(t, err, &lae)
	_, err = b2.a.Locks().TryAcquire(ctx, "shared-lock", 0)
	require.ErrorAs(t, err, &lae)
	require.NoError(t, lb.Release(ctx))
	select {
	case <-la.Done():
		t.Fatal("releasing beta's lock ended alpha's")
	default:
	}
	require.NoError(t, la.Release(ctx))
}
