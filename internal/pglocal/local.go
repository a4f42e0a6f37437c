// Package pglocal runs a throwaway PostgreSQL server from the local binaries
// (initdb and postgres), as a child process on a free loopback port in a
// temporary directory. The tests (internal/pgtest) and `pgcoord demo` use it.
package pglocal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoPostgres is returned when no local PostgreSQL binaries exist.
var ErrNoPostgres = errors.New("no PostgreSQL binaries found (initdb, postgres): install them with apt-get install -y postgresql, or point pgcoord at a server with a database URL")

// EnvBinDir names the environment variable that selects the directory of
// initdb and postgres, overriding the search (CI uses it to run the tests on
// each supported PostgreSQL major version).
const EnvBinDir = "PGCOORD_TEST_PG_BIN"

// FindBinDir returns the directory holding initdb and postgres: $PGCOORD_TEST_PG_BIN
// when set, else the one of initdb on PATH (symlinks resolved), else the newest
// /usr/lib/postgresql/*/bin.
func FindBinDir() (string, error) {
	if dir := os.Getenv(EnvBinDir); dir != "" {
		for _, name := range []string{"initdb", "postgres"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				return "", fmt.Errorf("%s=%s: %w", EnvBinDir, dir, err)
			}
		}
		return dir, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			dir := filepath.Dir(r)
			if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
				return dir, nil
			}
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", ErrNoPostgres
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// Options configure a throwaway server. The zero value (and nil) is the
// fast, non-durable server the tests use.
type Options struct {
	// Durable runs the server with PostgreSQL's production durability
	// defaults (fsync, synchronous_commit and full_page_writes on), so a
	// commit waits for its WAL flush as it would in production. Without it
	// the server runs with all three off: fast, and fine for tests, but it
	// hides the cost of every WAL flush, so benchmarks default to Durable.
	Durable bool
}

// Server is a PostgreSQL server run as a child process.
type Server struct {
	durable bool
	binDir  string
	dir     string // temp root: data/, socket, log
	port    int
	cred    *syscall.Credential // non-nil when running as root
	logPath string

	mu  sync.Mutex // guards cmd and done
	cmd *exec.Cmd
	// done is closed when cmd has exited.
	done chan struct{}
}

// Start initialises and starts a throwaway, non-durable server (see
// [Options]). Stop it with Stop, which also removes its directory.
func Start(ctx context.Context) (*Server, error) {
	return StartWith(ctx, nil)
}

// StartWith is Start with options; nil opts is the zero Options.
func StartWith(ctx context.Context, opts *Options) (*Server, error) {
	binDir, err := FindBinDir()
	if err != nil {
		return nil, err
	}
	ls := &Server{binDir: binDir, durable: opts != nil && opts.Durable}
	if ls.dir, err = os.MkdirTemp("", "pgcoord-pg-"); err != nil {
		return nil, err
	}
	ls.logPath = filepath.Join(ls.dir, "postgres.log")
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			_ = os.RemoveAll(ls.dir)
			return nil, fmt.Errorf("running PostgreSQL as root needs a postgres user to run it as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		ls.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(ls.dir, uid, gid); err != nil {
			_ = os.RemoveAll(ls.dir)
			return nil, err
		}
	}
	if err := ls.initdb(ctx); err != nil {
		_ = os.RemoveAll(ls.dir)
		return nil, err
	}
	if ls.port, err = freePort(); err != nil {
		_ = os.RemoveAll(ls.dir)
		return nil, err
	}
	if err := ls.start(ctx); err != nil {
		_ = os.RemoveAll(ls.dir)
		return nil, err
	}
	return ls, nil
}

// URL is a connection string to the postgres database as the postgres superuser.
func (ls *Server) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", ls.port)
}

// Stop shuts the server down and removes its directory.
func (ls *Server) Stop(ctx context.Context) error {
	err := ls.stop(ctx)
	return errors.Join(err, os.RemoveAll(ls.dir))
}

// Restart stops PostgreSQL (fast shutdown: every session is disconnected) and
// starts it again on the same port and data directory.
func (ls *Server) Restart(ctx context.Context) error {
	if err := ls.stop(ctx); err != nil {
		return err
	}
	return ls.start(ctx)
}

// Crash stops PostgreSQL the way a crash does: an immediate shutdown
// (SIGQUIT to the postmaster), so WAL not yet written by the WAL writer (the
// commits of transactions run with synchronous_commit off) is lost, and the
// next start runs crash recovery and empties UNLOGGED tables. The data
// directory stays; start the server again with StartAgain.
func (ls *Server) Crash(ctx context.Context) error {
	switch running, exited := ls.shutdown(ctx, syscall.SIGQUIT, 0); {
	case !running:
		return errors.New("pglocal: crash: the server is not running")
	case !exited:
		return fmt.Errorf("pglocal: crash: postgres did not exit after SIGQUIT: %w", ctx.Err())
	}
	return nil
}

// StartAgain starts a server stopped by Crash on the same port and data
// directory, and returns once it accepts connections (after crash recovery).
func (ls *Server) StartAgain(ctx context.Context) error {
	ls.mu.Lock()
	running := ls.cmd != nil
	ls.mu.Unlock()
	if running {
		return errors.New("pglocal: start again: the server is running")
	}
	return ls.start(ctx)
}

func (ls *Server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(ls.binDir, name), args...)
	cmd.Dir = ls.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: ls.cred, Setpgid: true}
	return cmd
}

func (ls *Server) initdb(ctx context.Context) error {
	var out bytes.Buffer
	cmd := ls.command(ctx, "initdb", "-D", filepath.Join(ls.dir, "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pglocal: initdb: %w\n%s", err, out.String())
	}
	return nil
}

func (ls *Server) start(ctx context.Context) error {
	logf, err := os.OpenFile(ls.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o666)
	if err != nil {
		return err
	}
	defer logf.Close()
	if ls.cred != nil {
		_ = os.Chown(ls.logPath, int(ls.cred.Uid), int(ls.cred.Gid))
	}
	args := []string{
		"-D", filepath.Join(ls.dir, "data"),
		"-p", strconv.Itoa(ls.port),
		"-k", ls.dir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "max_connections=400",
		"-c", "shared_buffers=128MB",
		"-c", "max_locks_per_transaction=256",
	}
	if !ls.durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	// Not CommandContext: the server must outlive the ctx of the call that starts it.
	cmd := ls.command(context.Background(), "postgres", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Stop the server if the test binary dies without cleaning up.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pglocal: start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	ls.mu.Lock()
	ls.cmd, ls.done = cmd, done
	ls.mu.Unlock()

	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := WaitReady(wctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", ls.port)); err != nil {
		_ = ls.stop(context.Background())
		logs, _ := os.ReadFile(ls.logPath)
		return fmt.Errorf("pglocal: postgres did not become ready: %w\n%s", err, logs)
	}
	return nil
}

// stop asks for a fast shutdown and waits; after 30 s it kills the server.
func (ls *Server) stop(ctx context.Context) error {
	if running, exited := ls.shutdown(ctx, syscall.SIGINT, 30*time.Second); running && !exited {
		return errors.New("pglocal: postgres did not stop in time and was killed")
	}
	return nil
}

// shutdown takes the running server, sends its postmaster sig and waits for
// it to exit; when ctx ends first (or within passes, when not zero) it kills
// it. running is false when no server was running; exited false when it had
// to be killed.
func (ls *Server) shutdown(ctx context.Context, sig syscall.Signal, within time.Duration) (running, exited bool) {
	ls.mu.Lock()
	cmd, done := ls.cmd, ls.done
	ls.cmd = nil
	ls.mu.Unlock()
	if cmd == nil {
		return false, false
	}
	_ = cmd.Process.Signal(sig)
	var timeout <-chan time.Time
	if within > 0 {
		timer := time.NewTimer(within)
		defer timer.Stop()
		timeout = timer.C
	}
	select {
	case <-done:
		return true, true
	case <-timeout:
	case <-ctx.Done():
	}
	_ = cmd.Process.Kill()
	<-done
	return true, false
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WaitReady polls until a connection to connString succeeds or ctx ends.
func WaitReady(ctx context.Context, connString string) error {
	var last error
	for {
		c, err := pgx.Connect(ctx, connString)
		if err == nil {
			err = c.Ping(ctx)
			_ = c.Close(ctx)
			if err == nil {
				return nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
