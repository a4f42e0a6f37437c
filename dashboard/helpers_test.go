package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/dashboard"
	"github.com/pgcoord/pgcoord/pgcache"
	"github.com/pgcoord/pgcoord/pgcoordtest"
)

const prefix = "/dash"

// env is a two-instance cluster and a dashboard on its database, served
// under prefix by a real HTTP server.
type env struct {
	cluster *pgcoordtest.Cluster
	db      *pgcoordtest.DB
	h       *dashboard.Handler
	srv     *httptest.Server
}

func newEnv(t *testing.T, cfg *dashboard.Config) *env {
	t.Helper()
	return newEnvWith(t, cfg, nil)
}

// setup marks t parallel and gives it a background context and newEnv(t, nil).
func setup(t *testing.T) (context.Context, *env) {
	t.Helper()
	t.Parallel()
	return context.Background(), newEnv(t, nil)
}

// newEnvWith is newEnv with configure applied to each instance's config.
func newEnvWith(t *testing.T, cfg *dashboard.Config, configure func(i int, cfg *app.Config)) *env {
	t.Helper()
	db := pgcoordtest.NewDB(t)
	cluster := pgcoordtest.StartCluster(t, db, 2, configure)
	var c dashboard.Config
	if cfg != nil {
		c = *cfg
	}
	c.Prefix = prefix
	h, err := dashboard.NewHandler(db.Pool, &c)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle(prefix+"/", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		h.Close() // ends live-tail streams, so the server's Close does not wait for them
		srv.Close()
	})
	return &env{cluster: cluster, db: db, h: h, srv: srv}
}

func (e *env) url(path string) string { return e.srv.URL + prefix + path }

// get fetches path and returns the status and body.
func (e *env) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := e.srv.Client().Get(e.url(path))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// getJSON fetches path and decodes its JSON into v.
func (e *env) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	code, body := e.get(t, path)
	require.Equal(t, http.StatusOK, code, body)
	require.NoError(t, json.Unmarshal([]byte(body), v))
}

// post sends a form (or a JSON body when form is nil) with headers.
func (e *env) post(t *testing.T, method, path string, form url.Values, jsonBody string, hdr http.Header) (int, string) {
	t.Helper()
	var body io.Reader = strings.NewReader(jsonBody)
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, e.url(path), body)
	require.NoError(t, err)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	client := *e.srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// hold takes key on instance i for the rest of the test.
func (e *env) hold(t *testing.T, i int, key string) *advisorylock.Lock {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pgcoordtest.DefaultTimeout)
	defer cancel()
	l, err := e.cluster.App(i).Locks().Acquire(ctx, key, time.Minute)
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Release(context.Background()) })
	return l
}

// publish publishes payload on channel from instance i.
func (e *env) publish(t *testing.T, i int, channel string, payload any) {
	t.Helper()
	require.NoError(t, e.cluster.App(i).PubSub().Publish(context.Background(), channel, payload, nil))
}

// sseEvent is one Server-Sent Event.
type sseEvent struct{ name, data string }

// openTail connects to the live tail and returns its events; the stream
// ends with the test.
func (e *env) openTail(t *testing.T, query string) <-chan sseEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url("/api/tail"+query), nil)
	require.NoError(t, err)
	resp, err := e.srv.Client().Do(req)
	require.NoError(t, err)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	events := make(chan sseEvent, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		for range events { // unblock a pending send
		}
		<-done
	})
	return events
}

// nextEvent returns the next event named name, skipping others.
func nextEvent(t *testing.T, events <-chan sseEvent, name string) sseEvent {
	t.Helper()
	for {
		ev := pgcoordtest.Receive(t, events)
		if ev.name == name {
			return ev
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func pgcacheConfig(prefix string) pgcache.CacheConfig {
	return pgcache.CacheConfig{Name: "hostile", Prefix: prefix}
}

// requireJobState checks a River job's state in the database.
func requireJobState(t *testing.T, e *env, id int64, want string) {
	t.Helper()
	var state string
	require.NoError(t, e.db.Pool.QueryRow(context.Background(),
		`SELECT state::text FROM `+pgx.Identifier{e.db.Schema, "river_job"}.Sanitize()+` WHERE id = $1`, id).Scan(&state))
	require.Equal(t, want, state)
}

// requireHeld checks whether the Locks JSON lists key as held.
func requireHeld(t *testing.T, e *env, key string, want bool) {
	t.Helper()
	var l dashboard.Locks
	e.getJSON(t, "/api/locks", &l)
	held := false
	for _, x := range l.Held {
		held = held || x.Key == key
	}
	require.Equal(t, want, held, "lock %q held", key)
}

// collected gathers values that other goroutines add.
type collected[T any] struct {
	mu    sync.Mutex
	items []T
}

func (c *collected[T]) add(v T) {
	c.mu.Lock()
	c.items = append(c.items, v)
	c.mu.Unlock()
}

// take returns the values added so far and forgets them.
func (c *collected[T]) take() []T {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.items
	c.items = nil
	return out
}
