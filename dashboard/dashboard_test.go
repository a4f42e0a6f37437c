package dashboard_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/dashboard"
	"github.com/pgcoord/pgcoord/migrations"
	"github.com/pgcoord/pgcoord/pgcache"
	"github.com/pgcoord/pgcoord/pgcoordtest"
)

// Every page and its JSON twin show the live state of a two-instance
// cluster: both instances, a published message, a held lock with its
// holder, a cache's entries.
func TestPages(t *testing.T) {
	ctx, e := setup(t)
	e.publish(t, 0, "orders.created", map[string]any{"order": 42})
	lock := e.hold(t, 1, "report:daily")
	require.NoError(t, e.cluster.App(0).Cache().Set(ctx, "greeting", "hello", 0))
	// A registered instance whose liveness session is gone (a SIGKILLed
	// process, until the registry sweeps its row).
	_, err := e.db.Pool.Exec(ctx, `INSERT INTO `+pgx.Identifier{e.db.Schema, "instances"}.Sanitize()+`
		(app, instance_id, host, pid, version, liveness_pid) VALUES ('ghost', 'ghost-1', 'gone.example', 4242, 'v0.0.1', 0)`)
	require.NoError(t, err)
	// A retention marker as listen's pruner writes it: not a message.
	_, err = e.db.Pool.Exec(ctx, `INSERT INTO `+pgx.Identifier{e.db.Schema, "messages"}.Sanitize()+`
		(app, channel, sender, skip_self, only_self, payload, published_at)
		VALUES ($1, 'pgcoord.retention-marker', '', true, true, to_json(pg_current_snapshot()::text), clock_timestamp())`, e.cluster.App(0).Name())
	require.NoError(t, err)

	tests := []struct {
		page string
		html []string // substrings of the HTML page
		json func(t *testing.T, body []byte)
	}{
		{"cluster", []string{"instance-0", "instance-1", "live", "ghost-1", "dead", "gone.example", "pg_notification_queue_usage()"}, func(t *testing.T, b []byte) {
			var c dashboard.Cluster
			require.NoError(t, json.Unmarshal(b, &c))
			require.Equal(t, migrations.LatestVersion(), c.SchemaVersion)
			require.Equal(t, c.SchemaWanted, c.SchemaVersion)
			require.NotEmpty(t, c.ServerVersion)
			live := map[string]bool{}
			for _, in := range c.Instances {
				require.True(t, in.Registered, "%s is in the registry", in.ID)
				require.NotEmpty(t, in.Version, in.ID)
				require.Positive(t, in.PID, in.ID)
				live[in.ID] = in.Live
				if in.ID == "ghost-1" {
					require.Zero(t, in.Connections)
				} else {
					require.Positive(t, in.Connections, in.ID)
					require.Contains(t, in.Stats, "published", in.ID)
				}
			}
			require.Equal(t, map[string]bool{"instance-0": true, "instance-1": true, "ghost-1": false}, live)
		}},
		{"channels", []string{"orders.created", `{&#34;order&#34;:42}`, "instance-0", "<svg", `id="tail"`}, func(t *testing.T, b []byte) {
			var c dashboard.Channels
			require.NoError(t, json.Unmarshal(b, &c))
			require.Len(t, c.Minutes, dashboard.RateMinutes)
			require.Len(t, c.Channels, 1)
			require.Equal(t, "orders.created", c.Channels[0].Channel)
			require.EqualValues(t, 1, c.Channels[0].Total)
			require.EqualValues(t, 1, c.Channels[0].PerMinute[dashboard.RateMinutes-1]+c.Channels[0].PerMinute[dashboard.RateMinutes-2])
			require.Len(t, c.Latest, 1)
			require.Equal(t, `{"order":42}`, c.Latest[0].Preview)
			require.Equal(t, "instance-0", c.Latest[0].Sender)
		}},
		{"locks", []string{"report:daily", "instance-1"}, func(t *testing.T, b []byte) {
			var l dashboard.Locks
			require.NoError(t, json.Unmarshal(b, &l))
			require.Len(t, l.Held, 1)
			require.Equal(t, "report:daily", l.Held[0].Key)
			require.Equal(t, "instance-1", l.Held[0].Owner)
			require.Equal(t, lock.Token(), l.Held[0].Token)
			require.Positive(t, l.Held[0].TTLMillis)
			require.Empty(t, l.Lost)
		}},
		{"caches", []string{"greeting", "main"}, func(t *testing.T, b []byte) {
			var c dashboard.Caches
			require.NoError(t, json.Unmarshal(b, &c))
			require.Len(t, c.Caches, 1)
			require.EqualValues(t, 1, c.Caches[0].Entries)
			require.Positive(t, c.Caches[0].Bytes)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.page, func(t *testing.T) {
			code, body := e.get(t, "/"+tt.page)
			require.Equal(t, http.StatusOK, code, body)
			for _, s := range tt.html {
				if tt.page == "caches" && s == "greeting" {
					continue // the Caches page shows prefixes, not keys
				}
				require.Contains(t, body, s)
			}
			code, body = e.get(t, "/api/"+tt.page)
			require.Equal(t, http.StatusOK, code, body)
			tt.json(t, []byte(body))
		})
	}
	t.Run("root redirects to cluster", func(t *testing.T) {
		code, body := e.get(t, "/")
		require.Equal(t, http.StatusOK, code)
		require.Contains(t, body, "instance-1")
	})
	t.Run("River UI is under /queue", func(t *testing.T) {
		code, body := e.get(t, "/queue/")
		require.Equal(t, http.StatusOK, code)
		require.Contains(t, body, prefix+"/queue")
		code, body = e.get(t, "/queue/api/jobs?state=available")
		require.Equal(t, http.StatusOK, code, body)
	})
}

// The Cluster page shows each instance's listener lag and the Caches page
// each instance's cache hit rates, from the stats snapshot of its last
// heartbeat.
func TestStatsSnapshotPages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnvWith(t, nil, func(_ int, cfg *app.Config) {
		cfg.HeartbeatInterval = 100 * time.Millisecond
		cfg.DefaultCache = &pgcache.CacheConfig{Prefix: "users", NearCache: true}
	})
	want := map[string]pgcache.Stats{}
	for i, id := range []string{"instance-0", "instance-1"} {
		c := e.cluster.App(i).Cache()
		require.NoError(t, c.Set(ctx, "k", "v", 0))
		for range i + 2 { // different counts per instance
			_, _, err := c.Get(ctx, "k")
			require.NoError(t, err)
		}
		_, _, err := c.Get(ctx, "missing")
		require.NoError(t, err)
		want[id] = c.Stats()
		require.Positive(t, want[id].NearHits, id)
	}
	pgcoordtest.WaitFor(t, "both instances' hit rates on the Caches page", func(context.Context) (bool, error) {
		var c dashboard.Caches
		e.getJSON(t, "/api/caches", &c)
		got := map[string]pgcache.Stats{}
		for _, r := range c.HitRates {
			require.Equal(t, "users", r.Prefix)
			got[r.Instance] = pgcache.Stats{Hits: r.Hits, Misses: r.Misses, NearHits: r.NearHits, NearMisses: r.NearMisses}
		}
		for id, w := range want {
			if got[id] != (pgcache.Stats{Hits: w.Hits, Misses: w.Misses, NearHits: w.NearHits, NearMisses: w.NearMisses}) {
				return false, nil
			}
		}
		return len(got) == 2, nil
	})
	var c dashboard.Caches
	e.getJSON(t, "/api/caches", &c)
	for _, r := range c.HitRates {
		w := want[r.Instance]
		require.InDelta(t, float64(w.Hits)/float64(w.Hits+w.Misses), r.HitRate, 1e-9, r.Instance)
		require.InDelta(t, float64(w.NearHits)/float64(w.Hits+w.Misses), r.NearHitRate, 1e-9, r.Instance)
	}
	_, body := e.get(t, "/caches")
	require.Contains(t, body, `id="hit-rates"`)
	require.Regexp(t, `<td>instance-1</td>.*<td class="num">\d+\.\d%</td>`, body)

	pgcoordtest.WaitFor(t, "both instances' listener lag on the Cluster page", func(context.Context) (bool, error) {
		var cl dashboard.Cluster
		e.getJSON(t, "/api/cluster", &cl)
		known := 0
		for _, in := range cl.Instances {
			if in.ListenerLagMillis >= 0 {
				known++
			}
		}
		return known == 2, nil
	})
	_, body = e.get(t, "/cluster")
	require.Contains(t, body, "<th>Listener lag</th>")
	require.NotContains(t, body, ">unknown<")
}

// A message published after the tail is ready arrives as an SSE event with
// its channel, sender and payload; the channel filter drops others.
func TestLiveTail(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.publish(t, 0, "before", 1) // history: never in the tail
	all := e.openTail(t, "")
	filtered := e.openTail(t, "?channel="+url.QueryEscape("wanted"))
	nextEvent(t, all, "ready")
	nextEvent(t, filtered, "ready")
	e.publish(t, 1, "other", "x")
	e.publish(t, 0, "wanted", map[string]any{"n": 1})

	var got []dashboard.Message
	for len(got) < 2 {
		var m dashboard.Message
		require.NoError(t, json.Unmarshal([]byte(nextEvent(t, all, "message").data), &m))
		got = append(got, m)
	}
	require.Equal(t, "other", got[0].Channel)
	require.Equal(t, "instance-1", got[0].Sender)
	require.Equal(t, `"x"`, got[0].Preview)
	require.Equal(t, "wanted", got[1].Channel)
	require.GreaterOrEqual(t, got[1].AgeMillis, int64(0))

	var m dashboard.Message
	require.NoError(t, json.Unmarshal([]byte(nextEvent(t, filtered, "message").data), &m))
	require.Equal(t, "wanted", m.Channel)
	require.Equal(t, `{"n":1}`, m.Preview)
}

// A message whose transaction commits after more than 64 later messages
// (ids are assigned at insert, not at commit) still reaches the live tail.
func TestLiveTailLateCommit(t *testing.T) {
	ctx, e := setup(t)
	e.publish(t, 0, "before", 1) // the app has a log: the tail listens on its channel
	events := e.openTail(t, "")
	nextEvent(t, events, "ready")
	tx, err := e.db.Pool.Begin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	require.NoError(t, e.cluster.App(0).PubSub().PublishTx(ctx, tx, "late", "held", nil))
	const others = 100
	for i := range others {
		e.publish(t, 1, "early", i)
	}
	next := func() string {
		var m dashboard.Message
		require.NoError(t, json.Unmarshal([]byte(nextEvent(t, events, "message").data), &m))
		return m.Channel
	}
	for range others { // the tail has shown every later id before the commit
		require.Equal(t, "early", next())
	}
	require.NoError(t, tx.Commit(ctx))
	e.publish(t, 1, "sentinel", "last") // committed after the late one

	var got []string
	for len(got) == 0 || got[len(got)-1] != "sentinel" {
		got = append(got, next())
	}
	require.Equal(t, []string{"late", "sentinel"}, got)
}

// Hostile payloads, channel names, lock keys and cache prefixes render as
// text on every page and in every JSON document, never as markup.
func TestHostileValuesAreEscaped(t *testing.T) {
	ctx, e := setup(t)
	const (
		channel = `<script>alert("channel")</script>`
		key     = `"><img src=x onerror=alert('key')>`
		prefix  = `</td><script>alert('prefix')</script>`
	)
	// Raw JSON: encoding/json would escape < and > on the way in.
	e.publish(t, 0, channel, json.RawMessage(`{"html": "<script>alert('payload')</script>", "attr": "\" onmouseover=\"alert(1)"}`))
	e.hold(t, 1, key)
	c, err := e.cluster.App(0).CacheManager().CreateCache(ctx, pgcacheConfig(prefix))
	require.NoError(t, err)
	require.NoError(t, c.Set(ctx, "k", "v", 0))
	tail := e.openTail(t, "")
	nextEvent(t, tail, "ready")
	e.publish(t, 0, channel, json.RawMessage(`"<script>alert('tail')</script>"`))

	hostile := regexp.MustCompile(`<script>alert|<img|" onmouseover=|</td><script`)
	for _, page := range []string{"cluster", "channels", "locks", "caches"} {
		code, body := e.get(t, "/"+page)
		require.Equal(t, http.StatusOK, code)
		require.Empty(t, hostile.FindAllString(body, -1), "page %s renders a hostile value as markup", page)
		code, body = e.get(t, "/api/"+page)
		require.Equal(t, http.StatusOK, code)
		require.NotContains(t, body, "<", "/api/%s", page)
		require.NotContains(t, body, ">", "/api/%s", page)
	}
	_, body := e.get(t, "/channels")
	require.Contains(t, body, `&lt;script&gt;alert(&#34;channel&#34;)&lt;/script&gt;`)
	_, body = e.get(t, "/locks")
	require.Contains(t, body, `&#34;&gt;&lt;img src=x onerror=alert(&#39;key&#39;)&gt;`)
	ev := nextEvent(t, tail, "message")
	require.NotContains(t, ev.data, "<", "the tail's JSON carries raw markup")
	var m dashboard.Message
	require.NoError(t, json.Unmarshal([]byte(ev.data), &m))
	require.Equal(t, channel, m.Channel)
	require.Equal(t, `"<script>alert('tail')</script>"`, m.Preview)
}

// Read-only by default: no mutating request reaches River UI or the lock
// table, whatever it carries.
func TestReadOnlyByDefault(t *testing.T) {
	ctx, e := setup(t)
	l := e.hold(t, 0, "held")
	id, err := e.cluster.App(0).EventQueue().Publish(ctx, "jobs", map[string]any{"a": 1}, nil)
	require.NoError(t, err)

	for _, r := range []struct{ method, path, body string }{
		{http.MethodPost, "/queue/api/jobs/cancel", `{"ids":["` + itoa(id) + `"]}`},
		{http.MethodPost, "/queue/api/jobs/delete", `{"ids":["` + itoa(id) + `"]}`},
		{http.MethodPut, "/queue/api/queues/x/pause", `{}`},
		{http.MethodPost, "/locks/free", ""},
	} {
		form := url.Values(nil)
		if r.path == "/locks/free" {
			form = url.Values{"app": {"main"}, "key": {"held"}, "token": {itoa(l.Token())}}
		}
		code, body := e.post(t, r.method, r.path, form, r.body, nil)
		require.Equal(t, http.StatusForbidden, code, "%s %s: %s", r.method, r.path, body)
		require.Contains(t, body, "read-only")
	}
	requireJobState(t, e, id, "available")
	requireHeld(t, e, "held", true)
}

// With AllowActions, a mutating request needs the auth middleware's
// approval, a same-origin browser context and (for the dashboard's own
// forms) the CSRF token; then it acts.
func TestActions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	auth := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Test-User") != "admin" {
				http.Error(w, "not allowed", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	e := newEnv(t, &dashboard.Config{AllowActions: true, ActionAuth: auth})
	l := e.hold(t, 0, "held")
	id, err := e.cluster.App(0).EventQueue().Publish(ctx, "jobs", map[string]any{"a": 1}, nil)
	require.NoError(t, err)

	// The page hands out the CSRF cookie and token.
	resp, err := e.srv.Client().Get(e.url("/locks"))
	require.NoError(t, err)
	resp.Body.Close()
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if strings.Contains(c.Name, "csrf") {
			cookie = c
		}
	}
	require.NotNil(t, cookie)
	_, page := e.get(t, "/locks")
	require.Contains(t, page, "force free")

	admin := http.Header{"X-Test-User": {"admin"}}
	withCookie := http.Header{"X-Test-User": {"admin"}, "Cookie": {cookie.Name + "=" + cookie.Value}}
	crossSite := http.Header{"X-Test-User": {"admin"}, "Cookie": {cookie.Name + "=" + cookie.Value}, "Sec-Fetch-Site": {"cross-site"}}
	free := url.Values{"app": {"main"}, "key": {"held"}, "token": {itoa(l.Token())}, "csrf": {cookie.Value}}
	cancelJob := `{"ids":["` + itoa(id) + `"]}`

	refused := []struct {
		name string
		form url.Values
		body string
		path string
		hdr  http.Header
		code int
	}{
		{"lock: no approval", free, "", "/locks/free", http.Header{"Cookie": withCookie["Cookie"]}, http.StatusUnauthorized},
		{"lock: no CSRF cookie", free, "", "/locks/free", admin, http.StatusForbidden},
		{"lock: wrong CSRF token", url.Values{"app": {"main"}, "key": {"held"}, "token": {itoa(l.Token())}, "csrf": {strings.Repeat("0", 64)}}, "", "/locks/free", withCookie, http.StatusForbidden},
		{"lock: cross-site", free, "", "/locks/free", crossSite, http.StatusForbidden},
		{"queue: no approval", nil, cancelJob, "/queue/api/jobs/cancel", nil, http.StatusUnauthorized},
		{"queue: cross-site", nil, cancelJob, "/queue/api/jobs/cancel", crossSite, http.StatusForbidden},
	}
	for _, r := range refused {
		code, body := e.post(t, http.MethodPost, r.path, r.form, r.body, r.hdr)
		require.Equal(t, r.code, code, "%s: %s", r.name, body)
	}
	requireJobState(t, e, id, "available")
	requireHeld(t, e, "held", true)

	// An instance waits for the key; its poll is an hour away, so only the
	// forced release's notification can hand it the key.
	waiter, err := advisorylock.New(e.db.Pool, &advisorylock.Config{PollInterval: time.Hour, InstanceID: "waiter"})
	require.NoError(t, err)
	require.NoError(t, waiter.Start(ctx))
	t.Cleanup(func() { _ = waiter.Close(context.Background()) })
	got := make(chan error, 1)
	go func() {
		wl, err := waiter.TryAcquire(ctx, "held", 20*time.Second)
		if err == nil {
			err = wl.Release(ctx)
		}
		got <- err
	}()
	require.Eventually(t, func() bool { return waiter.Stats().Contended > 0 }, pgcoordtest.DefaultTimeout, time.Millisecond)

	code, body := e.post(t, http.MethodPost, "/locks/free", free, "", withCookie)
	require.Equal(t, http.StatusSeeOther, code, body)
	require.NoError(t, <-got, "the waiter is handed the key by the forced release")
	require.EqualValues(t, 1, waiter.Stats().Designated)
	requireHeld(t, e, "held", false)
	// The holder learns it lost the lease at its next renewal, or now:
	require.ErrorIs(t, l.Extend(ctx, time.Minute), advisorylock.ErrNotHeld)

	code, body = e.post(t, http.MethodPost, "/queue/api/jobs/cancel", nil, cancelJob, admin)
	require.Equal(t, http.StatusOK, code, body)
	requireJobState(t, e, id, "cancelled")
}

func TestNewHandlerConfig(t *testing.T) {
	t.Parallel()
	db := pgcoordtest.NewDB(t)
	for name, cfg := range map[string]*dashboard.Config{
		"actions without auth": {AllowActions: true},
		"bad schema":           {Schema: `x"; DROP TABLE y`},
		"bad prefix":           {Prefix: `/a"><script>`},
	} {
		_, err := dashboard.NewHandler(db.Pool, cfg)
		require.ErrorIs(t, err, dashboard.ErrInvalidConfig, name)
	}
	_, err := dashboard.NewHandler(nil, nil)
	require.ErrorIs(t, err, dashboard.ErrInvalidConfig)
	h, err := dashboard.NewHandler(db.Pool, nil)
	require.NoError(t, err)
	h.Close()
}

// statements records the SQL of every statement run through a pool.
type statements struct{ collected[string] }

func (s *statements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	s.add(d.SQL)
	return ctx
}

func (s *statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// A page reads the database clock in its own queries: no statement of a
// page is a clock read alone.
func TestPagesReadNoSeparateClock(t *testing.T) {
	t.Parallel()
	db := pgcoordtest.NewDB(t)
	rec := &statements{}
	cfg := db.Pool.Config().Copy()
	cfg.ConnConfig.Tracer = rec
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	h, err := dashboard.NewHandler(pool, nil)
	require.NoError(t, err)
	t.Cleanup(h.Close)
	clock := regexp.MustCompile(`(?is)^\s*SELECT\s+(date_trunc\('minute',\s*)?now\(\)\)?\s*$`)
	for _, page := range []string{"cluster", "channels", "locks", "caches"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/api/"+page, nil))
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		for _, sql := range rec.take() {
			require.False(t, clock.MatchString(sql), "page %s reads the clock alone: %s", page, sql)
		}
	}
}
