package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/internal/pglocal"
	"github.com/pgcoord/pgcoord/migrations"
)

// EnvDatabaseURL names the environment variable that points the tests at an
// existing server. Its role must be allowed to create databases.
const EnvDatabaseURL = "PGCOORD_TEST_DATABASE_URL"

// Server is one PostgreSQL server used by tests.
type Server struct {
	// Kind says where the server came from: "url", "testcontainers" or "local".
	Kind string

	adminURL string // connection string to a maintenance database as a superuser or CREATEDB role
	local    *pglocal.Server
	stopFn   func(context.Context) error

	tplOnce sync.Once
	tplName string
	tplErr  error
}

// AdminURL is a connection string to the server's maintenance database.
func (s *Server) AdminURL() string { return s.adminURL }

// CanRestart reports whether Restart works on this server (only on a local
// server started by pgtest).
func (s *Server) CanRestart() bool { return s.local != nil }

// Restart stops PostgreSQL (fast shutdown: every session is disconnected) and
// starts it again on the same port and data directory.
func (s *Server) Restart(ctx context.Context) error {
	if s.local == nil {
		return fmt.Errorf("pgtest: restart needs a local server started by pgtest; this one is %q", s.Kind)
	}
	return s.local.Restart(ctx)
}

// Crash stops PostgreSQL the way a crash does (an immediate shutdown: WAL
// the WAL writer has not written yet is lost, UNLOGGED tables are emptied at
// the next start), keeping its data directory; Start brings it back.
func (s *Server) Crash(ctx context.Context) error {
	if s.local == nil {
		return fmt.Errorf("pgtest: crash needs a local server started by pgtest; this one is %q", s.Kind)
	}
	return s.local.Crash(ctx)
}

// Start starts a server stopped by Crash again (on the same port and data
// directory) and returns once crash recovery is done and it accepts
// connections.
func (s *Server) Start(ctx context.Context) error {
	if s.local == nil {
		return fmt.Errorf("pgtest: start needs a local server started by pgtest; this one is %q", s.Kind)
	}
	return s.local.StartAgain(ctx)
}

// Stop stops the server (a no-op for a server pgtest did not start) and
// drops the template database it created.
func (s *Server) Stop(ctx context.Context) error {
	if s.tplName != "" && s.local == nil {
		if conn, err := pgx.Connect(ctx, s.adminURL); err == nil {
			_, _ = conn.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{s.tplName}.Sanitize()+` WITH (FORCE)`)
			_ = conn.Close(ctx)
		}
	}
	if s.stopFn != nil {
		return s.stopFn(ctx)
	}
	return nil
}

// URLFor returns a connection string to database name on this server.
func (s *Server) URLFor(name string) string {
	return replaceDatabase(s.adminURL, name)
}

// template creates, once, a database with every migration applied.
func (s *Server) template(ctx context.Context) (string, error) {
	s.tplOnce.Do(func() {
		name := "pgcoord_tpl_" + randomSuffix()
		s.tplErr = s.createDatabase(ctx, name, "")
		if s.tplErr != nil {
			return
		}
		pool, err := pgxpool.New(ctx, s.URLFor(name))
		if err != nil {
			s.tplErr = err
			return
		}
		_, err = migrations.Up(ctx, pool, nil)
		pool.Close() // CREATE DATABASE … TEMPLATE needs the template to have no sessions
		if err != nil {
			s.tplErr = fmt.Errorf("pgtest: migrate template: %w", err)
			return
		}
		s.tplName = name
	})
	return s.tplName, s.tplErr
}

func (s *Server) createDatabase(ctx context.Context, name, template string) error {
	conn, err := pgx.Connect(ctx, s.adminURL)
	if err != nil {
		return fmt.Errorf("pgtest: connect to server: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	q := `CREATE DATABASE ` + pgx.Identifier{name}.Sanitize()
	if template != "" {
		q += ` TEMPLATE ` + pgx.Identifier{template}.Sanitize()
	}
	// A template that still has a session (a pool closing asynchronously) makes
	// CREATE DATABASE fail with "is being accessed by other users": retry briefly.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err = conn.Exec(ctx, q)
		if err == nil || !strings.Contains(err.Error(), "being accessed by other users") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("pgtest: %s: %w", q, err)
	}
	return nil
}

func (s *Server) dropDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, s.adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()+` WITH (FORCE)`)
	return err
}

func replaceDatabase(connString, name string) string {
	u, err := url.Parse(connString)
	if err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + name
		return u.String()
	}
	// keyword/value form
	return connString + " dbname='" + strings.ReplaceAll(name, "'", `\'`) + "'"
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// StartLocal starts a throwaway local server (see package pglocal).
func StartLocal(ctx context.Context) (*Server, error) {
	return startLocal(ctx, nil)
}

func startLocal(ctx context.Context, opts *pglocal.Options) (*Server, error) {
	ls, err := pglocal.StartWith(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &Server{Kind: "local", adminURL: ls.URL(), local: ls, stopFn: ls.Stop}, nil
}

func waitReady(ctx context.Context, connString string) error {
	return pglocal.WaitReady(ctx, connString)
}
