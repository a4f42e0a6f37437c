package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/pgcache"
	"github.com/pgcoord/pgcoord/queue"
	"github.com/pgcoord/pgcoord/txhooks"
)

// journal records events from every plugin of a test in order.
type journal struct {
	mu     sync.Mutex
	events []string
	added  pgtest.Signal // notified after each add
}

func (j *journal) add(format string, args ...any) {
	j.mu.Lock()
	j.events = append(j.events, fmt.Sprintf(format, args...))
	j.mu.Unlock()
	j.added.Notify()
}

// waitFor waits, without polling, until event is in the journal, failing
// the test after within.
func (j *journal) waitFor(t *testing.T, event string, within time.Duration) {
	t.Helper()
	j.added.WaitUntil(t, within, func() bool { return slices.Contains(j.list(), event) }, "want %q", event)
}

func (j *journal) list() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.events...)
}

// hookPlugin implements every hook and records them.
type hookPlugin struct {
	app.PluginBase
	name      string
	j         *journal
	stopErr   error
	synced    chan listen.Message
	loadCheck func(a *app.App) error
}

func (p *hookPlugin) Name() string { return p.name }
func (p *hookPlugin) BeforeLoad(ctx context.Context, a *app.App) error {
	p.j.add("%s:beforeLoad", p.name)
	return nil
}
func (p *hookPlugin) Load(ctx context.Context, a *app.App) error {
	p.j.add("%s:load", p.name)
	if p.loadCheck != nil {
		return p.loadCheck(a)
	}
	return nil
}
func (p *hookPlugin) AfterStart(ctx context.Context, a *app.App) error {
	p.j.add("%s:afterStart", p.name)
	return nil
}
func (p *hookPlugin) BeforeStop(ctx context.Context, a *app.App) error {
	p.j.add("%s:beforeStop", p.name)
	return p.stopErr
}
func (p *hookPlugin) HandleSyncMessage(ctx context.Context, msg listen.Message) error {
	if p.synced != nil {
		p.synced <- msg
	}
	return nil
}

func newApp(t *testing.T, pool *pgxpool.Pool, name, instance string, plugins ...app.Plugin) *app.App {
	t.Helper()
	a, err := app.New(context.Background(), app.Config{
		Name: name, Pool: pool, InstanceID: instance, Plugins: plugins,
		Sync: &listen.SyncConfig{Debounce: 10 * time.Millisecond},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Stop(context.Background()) })
	return a
}

func TestLifecycleOrder(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	j := &journal{}
	p1 := &hookPlugin{name: "one", j: j}
	p2 := &hookPlugin{name: "two", j: j, loadCheck: func(a *app.App) error {
		// At Load the primitives are usable: the default cache and locks work.
		if a.Cache() == nil {
			return errors.New("no default cache at Load")
		}
		if err := a.Cache().Set(ctx, "k", "v", 0); err != nil {
			return err
		}
		return a.Locks().RunExclusive(ctx, "load", time.Minute, func(context.Context, *advisorylock.Lock) error { return nil })
	}}
	a := newApp(t, db.Pool, "lifecycle", "i1", p1, p2)
	require.Nil(t, a.Cache(), "no cache before Start")
	require.NoError(t, a.Start(ctx))
	require.Equal(t, "lifecycle", a.Cache().Name())
	require.Equal(t, []string{"one:beforeLoad", "two:beforeLoad", "one:load", "two:load", "one:afterStart", "two:afterStart"}, j.list())

	require.NoError(t, a.Stop(ctx))
	require.Equal(t, []string{"two:beforeStop", "one:beforeStop"}, j.list()[6:])
	// Every component is closed after Stop.
	require.ErrorIs(t, a.PubSub().Publish(ctx, "c", 1, nil), listen.ErrClosed)
	_, err := a.EventQueue().Publish(ctx, "c", 1, nil)
	require.ErrorIs(t, err, queue.ErrClosed)
	_, err = a.Locks().Acquire(ctx, "k", time.Second)
	require.ErrorIs(t, err, advisorylock.ErrClosed)
	_, err = a.CacheManager().Cache("lifecycle")
	require.ErrorIs(t, err, pgcache.ErrClosed)

	// Stop twice is fine; Start after Stop is refused.
	require.NoError(t, a.Stop(ctx))
	require.ErrorIs(t, a.Start(ctx), app.ErrClosed)
}

func TestStopBeforeStart(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	j := &journal{}
	a := newApp(t, db.Pool, "unstarted", "i1", &hookPlugin{name: "p", j: j})
	require.NoError(t, a.Stop(context.Background()))
	require.Empty(t, j.list(), "no BeforeStop for a plugin that never started")
	require.NoError(t, db.Pool.Ping(context.Background()), "a pool passed in is never closed by the app")
}

// The queue waits for a running message while the database is still open,
// and a failing BeforeStop does not prevent the rest of the shutdown.
func TestStopDrainsQueueWithDatabaseOpenDespiteFailingHook(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	j := &journal{}
	started, release := make(chan struct{}), make(chan struct{})
	var dbErrInProcess error
	var a *app.App
	worker := &queuePlugin{j: j, process: func(ctx context.Context, m queue.Message) error {
		close(started)
		<-release
		// Still inside a running message at Stop: the app's own pool (which
		// Stop closes last) must still be open.
		var one int
		dbErrInProcess = a.DB().QueryRow(ctx, `SELECT 1`).Scan(&one)
		j.add("message done")
		return dbErrInProcess
	}}
	failing := &hookPlugin{name: "failing", j: j, stopErr: errors.New("hook failed")}
	a, err := app.New(ctx, app.Config{Name: "drain", DatabaseURL: db.URL, InstanceID: "i1", Plugins: []app.Plugin{worker, failing}})
	require.NoError(t, err)
	require.NoError(t, a.Start(ctx))
	_, err = a.EventQueue().Publish(ctx, "work", map[string]int{"n": 1}, nil)
	require.NoError(t, err)
	<-started

	stopped := make(chan error, 1)
	go func() { stopped <- a.Stop(ctx) }()
	j.waitFor(t, "worker:beforeStop", 10*time.Second)
	select {
	case <-stopped:
		t.Fatal("Stop returned while a message was running")
	default:
	}
	close(release)
	err = <-stopped
	require.ErrorContains(t, err, "hook failed")
	require.NoError(t, dbErrInProcess)
	require.Equal(t, []string{"failing:beforeLoad", "failing:load", "failing:afterStart", "failing:beforeStop", "worker:beforeStop", "message done"}, j.list())
	// The failing hook did not stop the shutdown.
	require.ErrorIs(t, a.PubSub().Publish(ctx, "c", 1, nil), listen.ErrClosed)
}

// Stop past its deadline, with a message whose Process ignores its ctx:
// Stop returns while Process still runs, reports only the queue's deadline,
// every later step still closes its component (none reuses the expired ctx),
// and the message is available again when Stop returns.
func TestStopPastDeadlineStillClosesEverything(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	j := &journal{}
	started, release, returned := make(chan struct{}), make(chan struct{}), make(chan struct{})
	worker := &queuePlugin{j: j, process: func(context.Context, queue.Message) error {
		defer close(returned)
		close(started)
		<-release // ignores its ctx
		return nil
	}}
	ctx := context.Background()
	a, err := app.New(ctx, app.Config{Name: "hung", DatabaseURL: db.URL, InstanceID: "i1", Plugins: []app.Plugin{worker}})
	require.NoError(t, err)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	require.NoError(t, a.Start(ctx))
	id, err := a.EventQueue().Publish(ctx, "work", 1, nil)
	require.NoError(t, err)
	<-started

	stopCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	err = a.Stop(stopCtx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	for _, step := range []string{"close sync messages", "close cache", "close pub/sub", "release locks"} {
		require.NotContains(t, err.Error(), step, "a later step reused the expired ctx")
	}
	select {
	case <-returned:
		t.Fatal("Process returned although it ignores its ctx")
	default:
	}
	var state string
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT state::text FROM pgcoord.river_job WHERE id = $1`, id).Scan(&state))
	require.Equal(t, "available", state)
	require.ErrorIs(t, a.PubSub().Publish(ctx, "c", 1, nil), listen.ErrClosed)
	close(release)
	<-returned
}

type queuePlugin struct {
	j       *journal
	process func(ctx context.Context, m queue.Message) error
}

func (p *queuePlugin) Name() string { return "worker" }
func (p *queuePlugin) Load(ctx context.Context, a *app.App) error {
	return a.EventQueue().Subscribe(ctx, "work", queue.Consumer{Process: p.process, Concurrency: 1})
}
func (p *queuePlugin) BeforeStop(ctx context.Context, a *app.App) error {
	p.j.add("worker:beforeStop")
	return nil
}

func TestNewValidatesPlugins(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	j := &journal{}
	_, err := app.New(ctx, app.Config{Pool: db.Pool, Plugins: []app.Plugin{&hookPlugin{name: "", j: j}}})
	require.ErrorContains(t, err, "empty name")
	_, err = app.New(ctx, app.Config{Pool: db.Pool, Plugins: []app.Plugin{&hookPlugin{name: "x", j: j}, &hookPlugin{name: "x", j: j}}})
	require.ErrorContains(t, err, `two plugins are named "x"`)
	_, err = app.New(ctx, app.Config{})
	require.ErrorContains(t, err, "Pool or Config.DatabaseURL is required")
	_, err = app.New(ctx, app.Config{Pool: db.Pool, Schema: "Bad Schema"})
	require.Error(t, err)

	// A PluginBase outside an app says so.
	var lone hookPlugin
	require.ErrorIs(t, lone.SendSyncMessage(ctx, "x"), app.ErrPluginNotBound)
}

func TestPluginSyncMessagesAcrossInstances(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	j := &journal{}
	var plugins []*hookPlugin
	var apps []*app.App
	for i := range 3 {
		p := &hookPlugin{name: "schema", j: j, synced: make(chan listen.Message, 16)}
		a := newApp(t, db.NewPool(t, &pgtest.PoolOptions{AppName: fmt.Sprintf("inst-%d", i)}), "sync", fmt.Sprintf("inst-%d", i), p)
		require.NoError(t, a.Start(ctx))
		plugins, apps = append(plugins, p), append(apps, a)
	}
	// A plain send reaches the same plugin on every other instance, once.
	require.NoError(t, plugins[0].SendSyncMessage(ctx, map[string]string{"type": "syncCollection", "name": "posts"}))
	for _, p := range plugins[1:] {
		msg := <-p.synced
		require.JSONEq(t, `{"type":"syncCollection","name":"posts"}`, string(msg.Payload))
		require.Equal(t, "inst-0", msg.Sender)
	}
	// Transactional: nothing on rollback, delivered after commit.
	tx, err := txhooks.Begin(ctx, apps[1].DB())
	require.NoError(t, err)
	require.NoError(t, plugins[1].SendSyncMessageTx(ctx, tx, "rolled-back"))
	require.NoError(t, tx.Rollback(ctx))
	require.NoError(t, txhooks.Run(ctx, apps[1].DB(), func(ctx context.Context, tx *txhooks.Tx) error {
		return plugins[1].SendSyncMessageTx(ctx, tx, "committed")
	}))
	for _, i := range []int{0, 2} {
		msg := <-plugins[i].synced
		var s string
		require.NoError(t, json.Unmarshal(msg.Payload, &s))
		require.Equal(t, "committed", s, "the rolled-back message never arrives; the committed one does")
	}

	// After instance 2 stops, its handler never runs again.
	require.NoError(t, apps[2].Stop(ctx))
	require.NoError(t, plugins[0].SendSyncMessage(ctx, "after-stop"))
	msg := <-plugins[1].synced
	require.JSONEq(t, `"after-stop"`, string(msg.Payload))
	// Instance 1 got it; instance 2 (stopped) got nothing, ever.
	require.NoError(t, apps[0].Stop(ctx))
	require.NoError(t, apps[1].Stop(ctx))
	require.Empty(t, plugins[2].synced)
	for _, p := range plugins {
		require.Empty(t, p.synced, "no message delivered twice or to its sender")
	}
}

func TestConfigFromEnv(t *testing.T) {
	t.Setenv(app.EnvDatabaseURL, "")
	_, err := app.ConfigFromEnv()
	require.ErrorContains(t, err, app.EnvDatabaseURL)

	t.Setenv(app.EnvDatabaseURL, "postgres://u@h/db")
	t.Setenv(app.EnvDirectDatabaseURL, "postgres://u@direct/db")
	t.Setenv(app.EnvAppName, "")
	t.Setenv(app.EnvInstanceID, "")
	t.Setenv(app.EnvSchema, "coord")
	cfg, err := app.ConfigFromEnv()
	require.NoError(t, err)
	require.Equal(t, "postgres://u@h/db", cfg.DatabaseURL)
	require.Equal(t, "postgres://u@direct/db", cfg.DirectDatabaseURL)
	require.Equal(t, app.DefaultName, cfg.Name)
	require.Equal(t, "coord", cfg.Schema)
	require.NotEmpty(t, cfg.InstanceID)
	cfg2, err := app.ConfigFromEnv()
	require.NoError(t, err)
	require.NotEqual(t, cfg.InstanceID, cfg2.InstanceID, "default instance ids are unique per call")

	t.Setenv(app.EnvAppName, "crm")
	t.Setenv(app.EnvInstanceID, "node-7")
	cfg, err = app.ConfigFromEnv()
	require.NoError(t, err)
	require.Equal(t, "crm", cfg.Name)
	require.Equal(t, "node-7", cfg.InstanceID)
}

func TestOwnPoolFromDatabaseURLIsClosedAtStop(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	a, err := app.New(ctx, app.Config{Name: "own", DatabaseURL: db.URL, AutoMigrate: true})
	require.NoError(t, err)
	require.NoError(t, a.Start(ctx))
	require.NoError(t, a.Cache().Set(ctx, "k", 1, 0))
	require.NoError(t, a.Stop(ctx))
	require.Error(t, a.DB().Ping(ctx), "the app closed the pool it opened")
}

// A failing Load makes Start fail, and Start stops what it had started: every
// plugin's BeforeStop runs (a plugin before the failing one may have
// subscribed resources) and every component is closed.
func TestStartFailureStopsEverything(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	j := &journal{}
	ok := &hookPlugin{name: "ok", j: j}
	bad := &hookPlugin{name: "bad", j: j, loadCheck: func(*app.App) error { return errors.New("load failed") }}
	a := newApp(t, db.Pool, "failing", "i1", ok, bad)
	err := a.Start(ctx)
	require.ErrorContains(t, err, `plugin "bad" Load: load failed`)
	require.Equal(t, []string{"ok:beforeLoad", "bad:beforeLoad", "ok:load", "bad:load", "bad:beforeStop", "ok:beforeStop"}, j.list(),
		"no AfterStart; BeforeStop in reverse order")
	require.ErrorIs(t, a.PubSub().Publish(ctx, "c", 1, nil), listen.ErrClosed)
	_, err = a.Locks().Acquire(ctx, "k", time.Second)
	require.ErrorIs(t, err, advisorylock.ErrClosed)
	require.ErrorIs(t, a.Start(ctx), app.ErrClosed, "a failed app cannot be started again")
}
