package app_test

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/faultproxy"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/pgcoordtest"
)

// recorder is a slog.Handler that keeps every record with its attributes.
type recorder struct {
	mu    sync.Mutex
	lines []line
}

type line struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { panic("obslog keeps With attributes itself") }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	l := line{level: rec.Level, msg: rec.Message, attrs: map[string]string{}}
	rec.Attrs(func(a slog.Attr) bool { l.attrs[a.Key] = a.Value.String(); return true })
	r.mu.Lock()
	r.lines = append(r.lines, l)
	r.mu.Unlock()
	return nil
}

func (r *recorder) all() []line {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]line(nil), r.lines...)
}

// requireAttributed checks that every line names app, instance and component.
func requireAttributed(t *testing.T, lines []line, appName, instance string) {
	t.Helper()
	for _, l := range lines {
		require.Equal(t, appName, l.attrs["app"], "%+v", l)
		require.Equal(t, instance, l.attrs["instance_id"], "%+v", l)
		require.NotEmpty(t, l.attrs["component"], "%+v", l)
	}
}

// A nil Config.Logger is slog.Default(). Not parallel: it sets the default.
func TestNilLoggerIsSlogDefault(t *testing.T) {
	rec := &recorder{}
	old := slog.Default()
	slog.SetDefault(slog.New(rec))
	t.Cleanup(func() { slog.SetDefault(old) })
	ctx := context.Background()
	db := pgtest.NewDB(t)
	a, err := app.New(ctx, app.Config{Name: "deflog", Pool: db.Pool, InstanceID: "d1"})
	require.NoError(t, err)
	require.NoError(t, a.Start(ctx))
	require.NoError(t, a.Stop(ctx))
	lines := rec.all()
	require.NotEmpty(t, lines)
	requireAttributed(t, lines, "deflog", "d1")
	var msgs []string
	for _, l := range lines {
		msgs = append(msgs, l.msg)
	}
	require.Contains(t, msgs, "pgcoord: app started")
}

// A database outage gives each component one WARN-or-worse line when it
// starts and one line when it ends (bounded), not one per failed poll,
// reconnect or election (River's included).
func TestOutageLogLinesBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	proxy, url := faultproxy.StartFor(t, db.URL)
	rec := &recorder{}
	a, err := app.New(ctx, app.Config{Name: "outage", DatabaseURL: url, InstanceID: "o1", Logger: slog.New(rec)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Stop(context.Background()) })
	require.NoError(t, a.Start(ctx))
	before := len(rec.all())

	// Every connection, open or new, fails at once: the database is gone.
	real, err := faultproxy.HostPort(db.URL)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	require.NoError(t, ln.Close()) // connections to it are refused
	proxy.SetTarget(dead)
	proxy.Cut()
	accepted := proxy.Accepted()
	// Enough failed attempts that a line per failure would be many lines.
	pgcoordtest.WaitFor(t, "60 failed connection attempts", func(context.Context) (bool, error) {
		return proxy.Accepted() >= accepted+60, nil
	})
	proxy.SetTarget(real)
	pgcoordtest.WaitFor(t, "healthy again", func(ctx context.Context) (bool, error) {
		return a.Health(ctx).Healthy, nil
	})
	require.NoError(t, a.Stop(ctx))

	lines := rec.all()[before:]
	requireAttributed(t, lines, "outage", "o1")
	warns := map[string]int{}
	suppressed := 0
	for _, l := range lines {
		if l.level >= slog.LevelWarn {
			warns[l.attrs["component"]]++
		}
		if s, ok := l.attrs["suppressed"]; ok {
			n, err := strconv.Atoi(s)
			require.NoError(t, err)
			suppressed += n
		}
	}
	t.Logf("WARN+ lines per component during the outage: %v; WARN+ lines suppressed: %d; all lines: %d", warns, suppressed, len(lines))
	for comp, n := range warns {
		require.LessOrEqual(t, n, 2, "component %s wrote %d WARN/ERROR lines", comp, n)
	}
	require.Positive(t, suppressed, "repeated failures were counted, not written")
}
