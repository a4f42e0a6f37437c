// Package liveness is the per-instance liveness session: one dedicated
// connection that holds a session advisory lock naming the instance for as
// long as the instance is alive. PostgreSQL drops the lock when the backend
// ends (process killed, connection cut, server restart), so any other
// instance can ask the database, whose view is the only one that counts,
// whether an instance is alive: [HeldExpr] is that question in SQL. No
// wall clock takes part.
//
// The session also bounds how long a dead peer keeps looking alive: it sets
// server-side TCP keepalives and tcp_user_timeout on its backend, so a
// silently partitioned backend ends within [ServerDetect]; and on reconnect
// it ends its own previous backend if that still holds the lock.
package liveness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/internal/connname"
	"github.com/pgcoord/pgcoord/internal/lockkey"
)

const (
	// CheckInterval is how often the session pings its connection.
	CheckInterval = 250 * time.Millisecond
	// PingTimeout bounds one ping: a session whose ping does not answer in
	// time counts as lost (the client side of a silent partition).
	PingTimeout = 2 * time.Second
	// ServerDetect bounds how long the server keeps a silently partitioned
	// session's backend (and so its lock): keepalive idle 2 s + 2 probes 1 s
	// apart, and tcp_user_timeout 4 s for unacknowledged data. It is longer
	// than CheckInterval + PingTimeout, so the instance notices the loss
	// before the others may see it dead. (TCP connections only; a Unix
	// socket has no partition.)
	ServerDetect = 4 * time.Second
	// maxReconnectWait caps the reconnect backoff, so a restarted server
	// sees the session back within this of accepting connections.
	maxReconnectWait = 500 * time.Millisecond
)

// ErrInUse is returned by [Start] when another live session holds the
// instance's lock: two running instances share one id.
var ErrInUse = errors.New("liveness: the instance id is held by another live session")

// Config configures a [Session].
type Config struct {
	// Namespace is the schema the instances share: the lock of instance ID
	// is lockkey.Key(Namespace, lockkey.Liveness, ID).
	Namespace string
	// ID is the instance id.
	ID string
	// AppName and Role name the connection (application_name, see
	// internal/connname).
	AppName, Role string
	// Logger receives reconnect warnings. Required.
	Logger *slog.Logger
}

// Session is an instance's liveness session. Its methods are safe for
// concurrent use.
type Session struct {
	cfg  Config
	pool *pgxpool.Pool

	// mu guards conn use and the fields below; the conn is used under mu
	// only, so a ping and an extra lock never interleave on the wire.
	mu      sync.Mutex
	conn    *pgx.Conn
	pid     uint32
	epoch   uint64
	live    bool
	changed chan struct{} // closed and replaced at every epoch or live change

	cancel context.CancelFunc
	done   chan struct{}
}

// HeldExpr returns a SQL boolean expression that is true while the session
// of instance idExpr (a SQL expression) in namespace nsExpr holds its lock.
// It reads pg_locks: cheap, and it takes no lock itself.
func HeldExpr(nsExpr, idExpr string) string {
	k := lockkey.SQL(nsExpr, lockkey.Liveness, idExpr) // = lockkey.Key(Namespace, Liveness, ID)
	return `EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
		AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND l.classid = ((` + k + ` >> 32) & 4294967295)::oid AND l.objid = (` + k + ` & 4294967295)::oid)`
}

// Start opens the session and takes the instance's lock; it fails with
// ErrInUse when another live session holds it. The session reconnects by
// itself until Close.
func Start(ctx context.Context, pool *pgxpool.Pool, cfg Config) (*Session, error) {
	s := &Session{cfg: cfg, pool: pool, changed: make(chan struct{}), done: make(chan struct{})}
	conn, pid, err := s.connect(ctx, 0)
	if err != nil {
		return nil, err
	}
	s.conn, s.pid, s.epoch, s.live = conn, pid, 1, true
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	go s.run(rctx)
	return s, nil
}

// connect opens a connection, sets its server-side timeouts and takes the
// lock. oldPID, when not 0, is this instance's previous backend: if it
// still holds the lock (the server has not noticed the partition yet) it is
// terminated first.
func (s *Session) connect(ctx context.Context, oldPID uint32) (*pgx.Conn, uint32, error) {
	cc := s.pool.Config().ConnConfig.Copy()
	connname.Set(cc, s.cfg.AppName, s.cfg.ID, s.cfg.Role)
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, 0, fmt.Errorf("liveness: connect: %w", err)
	}
	fail := func(err error) (*pgx.Conn, uint32, error) {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, 0, err
	}
	// Server side: a backend whose client went silent ends within
	// ServerDetect, which releases the lock.
	if _, err := conn.Exec(ctx, `SELECT set_config('tcp_keepalives_idle', '2', false), set_config('tcp_keepalives_interval', '1', false),
		set_config('tcp_keepalives_count', '2', false), set_config('tcp_user_timeout', '4000', false)`); err != nil {
		return fail(fmt.Errorf("liveness: set timeouts: %w", err))
	}
	if oldPID != 0 {
		// Our previous backend, if it still lives, holds our lock; ending
		// it is allowed for its own role. Failing here only delays: the
		// server ends it within ServerDetect anyway.
		// Only a backend holding this very lock: after a server restart the
		// old pid may belong to any other session.
		_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(l.pid) FROM pg_locks l
			WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.pid <> pg_backend_pid()
				AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
				AND l.classid = (($1::bigint >> 32) & 4294967295)::oid AND l.objid = ($1::bigint & 4294967295)::oid`,
			s.key())
	}
	var ok bool
	var pid uint32
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1), pg_backend_pid()`, s.key()).Scan(&ok, &pid); err != nil {
		return fail(fmt.Errorf("liveness: lock: %w", err))
	}
	if !ok {
		return fail(fmt.Errorf("%w (%q)", ErrInUse, s.cfg.ID))
	}
	return conn, pid, nil
}

// key is the advisory key of this session's instance lock.
func (s *Session) key() int64 { return lockkey.Key(s.cfg.Namespace, lockkey.Liveness, s.cfg.ID) }

// State returns the current epoch and whether the session is live. The
// epoch grows at every loss: work started in an older epoch may have been
// declared dead by others meanwhile. changed is closed at the next change.
func (s *Session) State() (epoch uint64, live bool, changed <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch, s.live, s.changed
}

// TryLock takes the session advisory lock of (Namespace,
// lockkey.LivenessLock, name) on the liveness connection, for as long as the
// session lives (a leadership that ends with the instance). It returns the
// epoch it was taken in; a later epoch means it was lost. Like a ping, it waits at most PingTimeout: a
// connection that does not answer in time is closed, so the session counts
// as lost at the next check (TryLock holds the connection, and with it the
// pings, while it waits).
func (s *Session) TryLock(ctx context.Context, name string) (bool, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.live || s.conn == nil {
		return false, s.epoch, nil
	}
	qctx, cancel := context.WithTimeout(ctx, PingTimeout)
	defer cancel()
	var ok bool
	err := s.conn.QueryRow(qctx, `SELECT pg_try_advisory_lock($1)`, lockkey.Key(s.cfg.Namespace, lockkey.LivenessLock, name)).Scan(&ok)
	if err != nil && ctx.Err() == nil {
		// The next ping fails at once and reconnects.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = s.conn.Close(cctx)
	}
	return ok, s.epoch, err
}

func (s *Session) setLocked(live bool) {
	if !live && s.live {
		s.epoch++
	}
	s.live = live
	close(s.changed)
	s.changed = make(chan struct{})
}

// run pings the session every CheckInterval and reconnects it when lost.
func (s *Session) run(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.mu.Lock()
			s.closeConnLocked()
			s.mu.Unlock()
			return
		case <-t.C:
		}
		s.mu.Lock()
		pctx, cancel := context.WithTimeout(ctx, PingTimeout)
		err := s.conn.Ping(pctx)
		cancel()
		if err == nil {
			s.mu.Unlock()
			continue
		}
		if ctx.Err() != nil {
			s.closeConnLocked()
			s.mu.Unlock()
			return
		}
		s.setLocked(false)
		oldPID := s.pid
		s.closeConnLocked()
		s.mu.Unlock()
		s.cfg.Logger.Warn("liveness: session lost; reconnecting", slog.String("instance_id", s.cfg.ID), slog.Any("error", err))

		b := backoff.NewExponentialBackOff()
		b.InitialInterval = 50 * time.Millisecond
		b.MaxInterval = maxReconnectWait
		type res struct {
			conn *pgx.Conn
			pid  uint32
		}
		r, err := backoff.Retry(ctx, func() (res, error) {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			c, pid, err := s.connect(cctx, oldPID)
			return res{c, pid}, err
		}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(0))
		if err != nil { // ctx ended
			return
		}
		s.mu.Lock()
		s.conn, s.pid = r.conn, r.pid
		s.setLocked(true)
		s.mu.Unlock()
		s.cfg.Logger.Info("liveness: session restored", slog.String("instance_id", s.cfg.ID))
	}
}

func (s *Session) closeConnLocked() {
	if s.conn == nil {
		return
	}
	cctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = s.conn.Close(cctx)
	s.conn = nil
}

// Close ends the session: the lock is released (the backend ends), and
// others see the instance dead at once.
func (s *Session) Close() {
	s.cancel()
	<-s.done
}
