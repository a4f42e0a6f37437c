package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/connname"
	"github.com/pgcoord/pgcoord/internal/faultproxy"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/pgcache"
	"github.com/pgcoord/pgcoord/pgcoordtest"
)

// instanceByID returns the registry row of id, if listed.
func instanceByID(list []app.Instance, id string) (app.Instance, bool) {
	i := slices.IndexFunc(list, func(in app.Instance) bool { return in.ID == id })
	if i < 0 {
		return app.Instance{}, false
	}
	return list[i], true
}

// waitInstances polls a's registry until cond holds, for at most bound.
func waitInstances(t *testing.T, a *app.App, bound time.Duration, cond func([]app.Instance) bool) []app.Instance {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		list, err := a.Instances(context.Background())
		require.NoError(t, err)
		if cond(list) {
			return list
		}
		require.True(t, time.Now().Before(deadline), "registry condition not met within %s: %+v", bound, list)
		time.Sleep(20 * time.Millisecond) // polling the database, not waiting for time to pass
	}
}

func TestInstanceRegistry(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	a := newApp(t, db.Pool, "reg", "inst-a")
	b := newApp(t, db.Pool, "reg", "inst-b")
	other := newApp(t, db.Pool, "reg-other", "inst-c")
	for _, x := range []*app.App{a, b, other} {
		require.NoError(t, x.Start(ctx))
	}

	list, err := a.Instances(ctx)
	require.NoError(t, err)
	require.Len(t, list, 2, "only this app's instances")
	for _, id := range []string{"inst-a", "inst-b"} {
		in, ok := instanceByID(list, id)
		require.True(t, ok, id)
		require.True(t, in.Alive, id)
		require.Equal(t, "reg", in.App)
		require.Equal(t, os.Getpid(), in.PID)
		require.NotEmpty(t, in.Host)
		require.NotEmpty(t, in.Version)
		require.False(t, in.StartedAt.IsZero())
		require.JSONEq(t, "0", string(mustField(t, in.Stats, "locks_held")))
		// The liveness pid is the lock-liveness connection's backend.
		var name string
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT application_name FROM pg_stat_activity WHERE pid = $1`, in.LivenessPID).Scan(&name))
		require.Equal(t, connname.Name("reg", id, connname.RoleLockLiveness), name)
	}

	all, err := app.ListInstances(ctx, db.Pool, "pgcoord", nil)
	require.NoError(t, err)
	require.Len(t, all, 3)
	_, err = app.ListInstances(ctx, db.Pool, "Bad;Schema", nil)
	require.Error(t, err)

	// Stop deregisters.
	require.NoError(t, b.Stop(ctx))
	list, err = a.Instances(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, "inst-a", list[0].ID)
}

// A heartbeat refreshes the row and sweeps the rows of dead instances once
// they missed three heartbeats; a dead row is shown dead until then.
func TestInstanceRegistrySweepsDead(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	a, err := app.New(ctx, app.Config{Name: "sweep", Pool: db.Pool, InstanceID: "live", HeartbeatInterval: 50 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Stop(context.Background()) })
	require.NoError(t, a.Start(ctx))
	// A dead instance: a row whose liveness backend does not exist, as a
	// SIGKILLed instance leaves it (TestInstanceRegistryKilled kills one).
	_, err = db.Pool.Exec(ctx, `INSERT INTO pgcoord.instances (app, instance_id, host, pid, version, liveness_pid) VALUES ('sweep', 'dead', 'h', 1, 'v', 0)`)
	require.NoError(t, err)
	list, err := a.Instances(ctx)
	require.NoError(t, err)
	dead, ok := instanceByID(list, "dead")
	require.True(t, ok)
	require.False(t, dead.Alive)
	first, _ := instanceByID(list, "live")
	list = waitInstances(t, a, 10*time.Second, func(list []app.Instance) bool {
		_, ok := instanceByID(list, "dead")
		return !ok
	})
	live, ok := instanceByID(list, "live")
	require.True(t, ok)
	require.True(t, live.Alive)
	require.True(t, live.HeartbeatAt.After(first.HeartbeatAt), "heartbeats refresh the row")
	require.Equal(t, first.StartedAt, live.StartedAt)
}

func mustField(t *testing.T, raw json.RawMessage, key string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(raw, &m))
	v, ok := m[key]
	require.True(t, ok, "stats have %s: %s", key, raw)
	return v
}

// envRegistryChild makes this test binary run one app instance (see
// TestRegistryChildProcess) on the database URL it names.
const envRegistryChild = "PGCOORD_APP_REGISTRY_CHILD"

// TestRegistryChildProcess is the SIGKILLed instance of
// TestInstanceRegistryKilled: it starts an app, prints "ready", and waits.
func TestRegistryChildProcess(t *testing.T) {
	url := os.Getenv(envRegistryChild)
	if url == "" {
		t.Skip("runs only as TestInstanceRegistryKilled's child process")
	}
	ctx := context.Background()
	a, err := app.New(ctx, app.Config{Name: "killed", DatabaseURL: url, InstanceID: "victim"})
	require.NoError(t, err)
	require.NoError(t, a.Start(ctx))
	os.Stdout.WriteString("ready\n")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // the parent kills us first
	require.NoError(t, a.Stop(ctx))
}

// A SIGKILLed instance shows as dead within the liveness bound: its liveness
// session's backend ends when the kernel closes the dead process's socket.
func TestInstanceRegistryKilled(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	observer := newApp(t, db.Pool, "killed", "observer")
	require.NoError(t, observer.Start(ctx))

	cmd := exec.Command(os.Args[0], "-test.run=^TestRegistryChildProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envRegistryChild+"="+db.URL)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && sc.Text() != "ready" {
	}
	require.Equal(t, "ready", sc.Text(), "child started")

	list := waitInstances(t, observer, 10*time.Second, func(list []app.Instance) bool {
		in, ok := instanceByID(list, "victim")
		return ok && in.Alive
	})
	victim, _ := instanceByID(list, "victim")
	require.Equal(t, cmd.Process.Pid, victim.PID)

	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	// The bound of a killed process: the server sees the socket close. The
	// advisorylock loss bound (HealthCheckInterval + 5 s) is the limit.
	waitInstances(t, observer, 10*time.Second, func(list []app.Instance) bool {
		in, ok := instanceByID(list, "victim")
		return ok && !in.Alive
	})
}

// Every connection pgcoord opens is named pgcoord/<app>/<instance>/<role>;
// a pool the user configured keeps the user's name, pgcoord's dedicated
// connections still carry theirs.
func TestConnectionsNamed(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	roles := func(t *testing.T, instance string) map[string]bool {
		rows, err := db.Pool.Query(ctx, `SELECT application_name FROM pg_stat_activity WHERE datname = current_database()`)
		require.NoError(t, err)
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		out := map[string]bool{}
		for _, n := range names {
			out[n] = true
		}
		return out
	}
	t.Run("app opens the pool", func(t *testing.T) {
		a, err := app.New(ctx, app.Config{Name: "named", DatabaseURL: db.URL, InstanceID: "n1"})
		require.NoError(t, err)
		t.Cleanup(func() { _ = a.Stop(context.Background()) })
		require.NoError(t, a.Start(ctx))
		require.NoError(t, a.Cache().Set(ctx, "k", 1, 0)) // a pool connection in use once
		got := roles(t, "n1")
		for _, role := range []string{connname.RolePool, connname.RoleListen, connname.RoleLockLiveness, connname.RoleQueueLiveness} {
			require.True(t, got[connname.Name("named", "n1", role)], "role %s in %v", role, got)
		}
	})
	t.Run("user pool keeps its name", func(t *testing.T) {
		pool := db.NewPool(t, &pgtest.PoolOptions{AppName: "mine"})
		a := newApp(t, pool, "named", "n2")
		require.NoError(t, a.Start(ctx))
		got := roles(t, "n2")
		require.True(t, got["mine"], "%v", got)
		require.False(t, got[connname.Name("named", "n2", connname.RolePool)])
		for _, role := range []string{connname.RoleListen, connname.RoleLockLiveness, connname.RoleQueueLiveness} {
			require.True(t, got[connname.Name("named", "n2", role)], "role %s in %v", role, got)
		}
	})
}

// The health handler answers 503 while the listener is cut off and 200 once
// it has reconnected.
func TestHealthHandlerListenerCut(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	proxy, url := faultproxy.StartFor(t, db.URL)
	a, err := app.New(ctx, app.Config{Name: "health", Pool: db.Pool, DirectDatabaseURL: url, InstanceID: "h1",
		Lock: &advisorylock.Config{HealthCheckInterval: 200 * time.Millisecond}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Stop(context.Background()) })
	get := func() (int, app.Health) { return getHealth(t, a) }
	code, h := get()
	require.Equal(t, http.StatusServiceUnavailable, code, "before Start")
	c, _ := h.Component(app.ComponentApp)
	require.Equal(t, "not started", c.Detail)

	require.NoError(t, a.Start(ctx))
	code, h = get()
	require.Equal(t, http.StatusOK, code, "%+v", h)
	require.Len(t, h.Components, 6)

	// New connections hang, open ones are cut: the listener cannot reconnect.
	proxy.Blackhole(true)
	proxy.Cut()
	pgcoordtest.WaitFor(t, "503 with the listener down", func(context.Context) (bool, error) {
		code, h := get()
		c, _ := h.Component(app.ComponentListen)
		return code == http.StatusServiceUnavailable && !c.Healthy, nil
	})
	_, h = get()
	c, _ = h.Component(app.ComponentDatabase)
	require.True(t, c.Healthy, "the pool goes around the proxy")

	proxy.Blackhole(false)
	pgcoordtest.WaitFor(t, "200 after reconnect", func(context.Context) (bool, error) {
		code, _ := get()
		return code == http.StatusOK, nil
	})

	require.NoError(t, a.Stop(ctx))
	code, _ = get()
	require.Equal(t, http.StatusServiceUnavailable, code, "after Stop")
}

// getHealth serves a's health handler once and decodes its report.
func getHealth(t *testing.T, a *app.App) (int, app.Health) {
	t.Helper()
	rec := httptest.NewRecorder()
	a.HealthHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	var h app.Health
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &h), rec.Body.String())
	return rec.Code, h
}

// unhealthy lists the components of h that are not healthy.
func unhealthy(h app.Health) []string {
	var out []string
	for _, c := range h.Components {
		if !c.Healthy {
			out = append(out, c.Name)
		}
	}
	return out
}

// The lock and queue components follow their liveness sessions: with the
// session's backend terminated and its reconnection refused, that component
// alone is unhealthy and the handler answers 503; once it may reconnect,
// 200.
func TestHealthLivenessSessions(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ component, role string }{
		{app.ComponentLocks, connname.RoleLockLiveness},
		{app.ComponentQueue, connname.RoleQueueLiveness},
	} {
		t.Run(tt.component, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := pgtest.NewDB(t)
			name := connname.Name("health", "h1", tt.role)
			pool, refuse := refusingPool(t, db, name)
			a, err := app.New(ctx, app.Config{Name: "health", Pool: pool, InstanceID: "h1",
				Lock: &advisorylock.Config{HealthCheckInterval: 200 * time.Millisecond}})
			require.NoError(t, err)
			t.Cleanup(func() { _ = a.Stop(context.Background()) })
			require.NoError(t, a.Start(ctx))
			code, h := getHealth(t, a)
			require.Equal(t, http.StatusOK, code, "%+v", h)

			refuse.Store(true)
			n, err := db.TerminateBackends(ctx, name)
			require.NoError(t, err)
			require.Equal(t, 1, n, "the %s session", tt.role)
			pgcoordtest.WaitFor(t, "503 with "+tt.component+" unhealthy", func(context.Context) (bool, error) {
				code, h := getHealth(t, a)
				return code == http.StatusServiceUnavailable && slices.Contains(unhealthy(h), tt.component), nil
			})
			_, h = getHealth(t, a)
			require.Equal(t, []string{tt.component}, unhealthy(h), "%+v", h)

			refuse.Store(false)
			pgcoordtest.WaitFor(t, "200 once "+tt.role+" reconnected", func(context.Context) (bool, error) {
				code, _ := getHealth(t, a)
				return code == http.StatusOK, nil
			})
		})
	}
}

// refusingPool returns a pool on db whose connections named name (an
// application_name) are refused while the returned flag is set. Every
// dedicated session pgcoord opens copies the pool's ConnConfig, and the
// server's answer names the connection's role.
func refusingPool(t *testing.T, db *pgtest.DB, name string) (*pgxpool.Pool, *atomic.Bool) {
	t.Helper()
	var refuse atomic.Bool
	cfg := db.Pool.Config().Copy()
	cfg.ConnConfig.ValidateConnect = func(_ context.Context, c *pgconn.PgConn) error {
		if refuse.Load() && c.ParameterStatus("application_name") == name {
			return errors.New("test: connection refused")
		}
		return nil
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool, &refuse
}

// Each heartbeat writes the instance's cache read counters (per cache) and
// its listener lag: a few hundred milliseconds at most while the listener
// is up, growing while it is cut off, back down once it reconnects.
func TestRegistryStatsSnapshot(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	listener := connname.Name("snap", "s2", connname.RoleListen)
	pool, refuse := refusingPool(t, db, listener)
	start := func(p *pgxpool.Pool, id string) *app.App {
		a, err := app.New(ctx, app.Config{Name: "snap", Pool: p, InstanceID: id, HeartbeatInterval: 100 * time.Millisecond,
			DefaultCache: &pgcache.CacheConfig{Prefix: "users", NearCache: true}})
		require.NoError(t, err)
		t.Cleanup(func() { _ = a.Stop(context.Background()) })
		require.NoError(t, a.Start(ctx))
		return a
	}
	a, _ := start(db.Pool, "s1"), start(pool, "s2")

	require.NoError(t, a.Cache().Set(ctx, "k", "v", 0))
	for range 3 {
		var v string
		_, err := a.Cache().GetInto(ctx, "k", &v)
		require.NoError(t, err)
	}
	_, found, err := a.Cache().Get(ctx, "missing")
	require.NoError(t, err)
	require.False(t, found)
	want := a.Cache().Stats()
	require.Positive(t, want.NearHits)
	require.Positive(t, want.Misses)
	snapshot := func(id string) app.InstanceStats {
		list, err := a.Instances(ctx)
		require.NoError(t, err)
		in, ok := instanceByID(list, id)
		require.True(t, ok, id)
		return in.DecodeStats()
	}
	pgcoordtest.WaitFor(t, "s1's cache counters in its snapshot", func(context.Context) (bool, error) {
		return slices.Equal(snapshot("s1").Caches, []app.CacheStats{{Name: "snap", Prefix: "users", Store: "postgres",
			Hits: want.Hits, Misses: want.Misses, NearHits: want.NearHits, NearMisses: want.NearMisses}}), nil
	})
	s1 := snapshot("s1")
	require.Equal(t, s1.Counters["listener_lag_ms"], s1.ListenerLagMillis)
	require.Contains(t, s1.Counters, "published")

	lag := func(id string) int64 { return snapshot(id).ListenerLagMillis }
	pgcoordtest.WaitFor(t, "both listeners' lag known", func(context.Context) (bool, error) {
		return lag("s1") >= 0 && lag("s2") >= 0, nil
	})
	refuse.Store(true)
	n, err := db.TerminateBackends(ctx, listener)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	pgcoordtest.WaitFor(t, "s2's lag grows while its listener is cut off", func(context.Context) (bool, error) {
		return lag("s2") > 3000, nil
	})
	refuse.Store(false)
	pgcoordtest.WaitFor(t, "s2's lag back under a second", func(context.Context) (bool, error) {
		return lag("s2") < 1000, nil
	})
}
