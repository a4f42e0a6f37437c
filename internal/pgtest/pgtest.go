package pgtest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/pgcoord/pgcoord/internal/pglocal"
	"github.com/pgcoord/pgcoord/migrations"
)

var (
	sharedMu  sync.Mutex // guards shared and sharedErr
	shared    *Server
	sharedErr error
)

// Start finds or starts a server (see the package documentation).
func Start(ctx context.Context) (*Server, error) {
	if u := os.Getenv(EnvDatabaseURL); u != "" {
		if err := waitReady(ctx, u); err != nil {
			return nil, fmt.Errorf("pgtest: %s does not answer: %w", EnvDatabaseURL, err)
		}
		return &Server{Kind: "url", adminURL: u}, nil
	}
	// An explicit binary directory (the CI version matrix) wins over Docker.
	if os.Getenv(pglocal.EnvBinDir) == "" && dockerAnswers(ctx) {
		return StartContainer(ctx)
	}
	return StartLocal(ctx)
}

// Shared returns the server of this test binary, starting it on first use.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		shared, sharedErr = Start(ctx)
	}
	if sharedErr != nil {
		tb.Fatalf("%v", sharedErr)
	}
	return shared
}

// Main is TestMain for packages that use pgtest: it starts the shared server,
// runs the tests, stops the server, and fails when goroutines leaked.
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
func Main(m *testing.M, opts ...goleak.Option) {
	// Goroutines that exist once the server is up (testcontainers' reaper,
	// pgx internals) are not leaks of the tests.
	code := Run(m, func() { opts = append(opts, goleak.IgnoreCurrent()) })
	if code == 0 {
		if err := goleak.Find(opts...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak: leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Run starts the shared server, calls started (when not nil), runs the tests
// and stops the server. It returns the exit code: m.Run's, or 2 when no server
// could be found or started.
func Run(m *testing.M, started func()) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	srv, err := Start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	sharedMu.Lock()
	shared = srv
	sharedMu.Unlock()
	if started != nil {
		started()
	}

	code := m.Run()

	stopCtx, stopCancel := context.WithTimeout(context.Background(), time.Minute)
	if err := srv.Stop(stopCtx); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest: stop server:", err)
	}
	stopCancel()
	return code
}

// DB is one test's own database, cloned from a template with every migration applied.
type DB struct {
	Server *Server
	Name   string
	// URL connects to this database.
	URL string
	// Schema holds pgcoord's tables (migrations.DefaultSchema).
	Schema string
	// Pool is a pool to the database with application_name "pgcoord-test",
	// closed when the test ends.
	Pool *pgxpool.Pool
}

var dbSeq atomic.Int64

// NewDB returns a fresh database on the shared server, dropped when the test ends.
func NewDB(tb testing.TB) *DB {
	tb.Helper()
	return Shared(tb).NewDB(tb)
}

// NewDB returns a fresh database on s, dropped when the test ends.
func (s *Server) NewDB(tb testing.TB) *DB {
	tb.Helper()
	d, err := s.newDB(tb.Cleanup)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	d.Pool = d.NewPool(tb, &PoolOptions{AppName: "pgcoord-test"})
	return d
}

func (s *Server) newDB(cleanup func(func())) (*DB, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tpl, err := s.template(ctx)
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("pgcoord_t%d_%s", dbSeq.Add(1), randomSuffix())
	if err := s.createDatabase(ctx, name, tpl); err != nil {
		return nil, err
	}
	cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.dropDatabase(ctx, name); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: drop database %s: %v\n", name, err)
		}
	})
	return &DB{Server: s, Name: name, URL: s.URLFor(name), Schema: migrations.DefaultSchema}, nil
}

// ExampleDB is NewDB for Example functions, which have no testing.TB: it
// returns a fresh database on the shared server (started by [Main]) with an
// open Pool, and a cleanup func that closes the pool and drops the database.
// It panics when no server is available, which fails the example.
func ExampleDB() (*DB, func()) {
	sharedMu.Lock()
	s, err := shared, sharedErr
	sharedMu.Unlock()
	if s == nil {
		panic(fmt.Sprintf("pgtest: ExampleDB needs pgtest.Main in TestMain (%v)", err))
	}
	var cleanups []func()
	d, err := s.newDB(func(f func()) { cleanups = append(cleanups, f) })
	if err != nil {
		panic(err)
	}
	pool, err := pgxpool.New(context.Background(), d.URL)
	if err != nil {
		panic(err)
	}
	d.Pool = pool
	return d, func() {
		pool.Close()
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
}

// PoolOptions configures an extra pool.
type PoolOptions struct {
	// AppName is the connection's application_name, used by TerminateBackends.
	AppName string
	// MaxConns caps the pool. Defaults to pgxpool's default.
	MaxConns int32
}

// PoolConfig returns a pool configuration for this database.
func (d *DB) PoolConfig(tb testing.TB, opts *PoolOptions) *pgxpool.Config {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(d.URL)
	if err != nil {
		tb.Fatalf("pgtest: parse %s: %v", d.URL, err)
	}
	if opts != nil && opts.AppName != "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = opts.AppName
	}
	if opts != nil && opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	return cfg
}

// NewPool opens another pool to the same database: what a second instance of
// an application would have. It is closed when the test ends.
func (d *DB) NewPool(tb testing.TB, opts *PoolOptions) *pgxpool.Pool {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, d.PoolConfig(tb, opts))
	if err != nil {
		tb.Fatalf("pgtest: open pool: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// TerminateBackends ends, with pg_terminate_backend, every session of this
// database whose application_name is appName, and every pgcoord dedicated
// connection (listener, liveness sessions: application_name
// pgcoord/<app>/<instance>/<role>) of the instance named appName; every
// session but the caller's when appName is empty. It returns how many it ended.
func (d *DB) TerminateBackends(ctx context.Context, appName string) (int, error) {
	conn, err := pgx.Connect(ctx, d.Server.adminURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int
	err = conn.QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
		FROM pg_stat_activity
		WHERE datname = $1 AND pid <> pg_backend_pid() AND ($2 = '' OR application_name = $2
			OR application_name LIKE 'pgcoord/%/' || replace(replace(replace($2, '\', '\\'), '%', '\%'), '_', '\_') || '/%')`,
		d.Name, appName).Scan(&n)
	return n, err
}

// NewPrivateServer starts a local server for this test alone (for tests that
// restart PostgreSQL), stopped when the test ends. It skips the test when the
// shared server is not local and no local binaries exist.
func NewPrivateServer(tb testing.TB) *Server {
	tb.Helper()
	return newPrivateServer(tb, nil)
}

// NewDurablePrivateServer is NewPrivateServer with production durability
// (fsync, synchronous_commit and full_page_writes on), for crash tests: a
// commit that waited for its WAL flush survives [Server.Crash], one made with
// synchronous_commit off may not.
func NewDurablePrivateServer(tb testing.TB) *Server {
	tb.Helper()
	return newPrivateServer(tb, &pglocal.Options{Durable: true})
}

func newPrivateServer(tb testing.TB, opts *pglocal.Options) *Server {
	tb.Helper()
	if _, err := pglocal.FindBinDir(); err != nil {
		tb.Skipf("pgtest: restarting PostgreSQL needs local binaries: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := startLocal(ctx, opts)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			tb.Logf("pgtest: stop private server: %v", err)
		}
	})
	return s
}
