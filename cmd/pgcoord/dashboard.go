package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/dashboard"
)

const dashboardUsage = `Usage: pgcoord dashboard [--addr 127.0.0.1:8080] [flags]

Serves the cluster dashboard of a live database until interrupted: Cluster
(instances, schema, PostgreSQL, NOTIFY queue), Channels (rates, latest
messages, live tail), Locks, Caches, and River UI under /queue. Read-only:
this command enables no action (embed dashboard.NewHandler with
AllowActions and your own auth middleware for that). It has no
authentication: keep it on a loopback address or behind your own
authenticating proxy.

Flags:
`

func cmdDashboard(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, flags := newCommand("dashboard", dashboardUsage, stderr)
	addr := fs.String("addr", "127.0.0.1:8080", "address to serve the dashboard on (loopback by default)")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	db, err := flags.Open(ctx, false, stderr)
	if err != nil {
		return err
	}
	defer db.Close(ctx)
	stop, err := startDashboard(ctx, db.Pool, flags.Schema, *addr, stdout, stderr)
	if err != nil {
		return err
	}
	<-ctx.Done()
	stop()
	return nil
}

// startDashboard serves the dashboard of schema on addr until stop is
// called. It warns loudly when addr is not a loopback address.
func startDashboard(ctx context.Context, pool *pgxpool.Pool, schema, addr string, stdout, stderr io.Writer) (stop func(), err error) {
	logger := warnLogger(stderr)
	h, err := dashboard.NewHandler(pool, &dashboard.Config{Schema: schema, Logger: logger})
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	bound := ln.Addr().(*net.TCPAddr)
	if !bound.IP.IsLoopback() {
		fmt.Fprintf(stderr, `
pgcoord: WARNING: the dashboard listens on %s, which is NOT a loopback address.
pgcoord: WARNING: anyone who can reach it sees every instance, channel, payload,
pgcoord: WARNING: lock key and queued job of this database. It has no
pgcoord: WARNING: authentication: bind to 127.0.0.1 or put it behind your own
pgcoord: WARNING: authenticating proxy.

`, bound)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("dashboard: serve", slog.Any("error", err))
		}
	}()
	host := bound.String()
	if bound.IP.IsUnspecified() {
		host = net.JoinHostPort("127.0.0.1", fmt.Sprint(bound.Port))
	}
	fmt.Fprintf(stdout, "pgcoord dashboard: http://%s/ (schema %s); Ctrl-C to stop\n", host, schema)
	return func() {
		h.Close() // ends live-tail streams, which Shutdown would wait for
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-done
	}, nil
}
