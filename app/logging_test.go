package app_test

import (
	"context"
	"log/slog"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/faultproxy"
	"github.com/pgcoord/pgcoord/internal/obslog/obslogtest"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/pgcoordtest"
)

// requireAttributed checks that every line names app, instance and component.
func requireAttributed(t *testing.T, lines []obslogtest.Line, appName, instance string) {
	t.Helper()
	for _, l := range lines {
		require.Equal(t, appName, l.Attrs["app"].String(), "%+v", l)
		require.Equal(t, instance, l.Attrs["instance_id"].String(), "%+v", l)
		require.NotEmpty(t, l.Attrs["component"].String(), "%+v", l)
	}
}

// A nil Config.Logger is slog.Default(). Not parallel: it sets the default.
func TestNilLoggerIsSlogDefault(t *testing.T) {
	rec := &obslogtest.Capture{}
	old := slog.Default()
	slog.SetDefault(slog.New(rec))
	t.Cleanup(func() { slog.SetDefault(old) })
	ctx := context.Background()
	db := pgtest.NewDB(t)
	a, err := app.New(ctx, app.Config{Name: "deflog", Pool: db.Pool, InstanceID: "d1"})
	require.NoError(t, err)
	require.NoError(t, a.Start(ctx))
	require.NoError(t, a.Stop(ctx))
	lines := rec.All()
	require.NotEmpty(t, lines)
	requireAttributed(t, lines, "deflog", "d1")
	var msgs []string
	for _, l := range lines {
		msgs = append(msgs, l.Msg)
	}
	require.Contains(t, msgs, "pgcoord: app started")
}

// A database outage gives each component one WARN-or-worse line when it
// starts and one line when it ends (bounded), not one per failed poll,
// reconnect or election (River's included).
func TestOutageLogLinesBounded(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	proxy, url := faultproxy.StartFor(t, db.URL)
	rec := &obslogtest.Capture{}
	a, err := app.New(ctx, app.Config{Name: "outage", DatabaseURL: url, InstanceID: "o1", Logger: slog.New(rec)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Stop(context.Background()) })
	require.NoError(t, a.Start(ctx))
	before := len(rec.All())

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

	lines := rec.All()[before:]
	requireAttributed(t, lines, "outage", "o1")
	warns := map[string]int{}
	suppressed := 0
	for _, l := range lines {
		if l.Level >= slog.LevelWarn {
			warns[l.Attrs["component"].String()]++
		}
		if s, ok := l.Attrs["suppressed"]; ok {
			suppressed += int(s.Int64())
		}
	}
	t.Logf("WARN+ lines per component during the outage: %v; WARN+ lines suppressed: %d; all lines: %d", warns, suppressed, len(lines))
	for comp, n := range warns {
		require.LessOrEqual(t, n, 2, "component %s wrote %d WARN/ERROR lines", comp, n)
	}
	require.Positive(t, suppressed, "repeated failures were counted, not written")
}
