package advisorylock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgcoord/pgcoord/internal/connname"
)

// minPingTimeout bounds the health-check ping from below: a slow answer on a
// loaded server must not count as a dead session (which would drop every lock).
const minPingTimeout = 5 * time.Second

// endOldSessionTimeout bounds the statement that ends the previous liveness
// session after a reconnect (it waits for that backend to exit).
const endOldSessionTimeout = 5 * time.Second

// pingTimeout is how long a health-check ping may take before the liveness
// session counts as lost: HealthCheckInterval, at least minPingTimeout.
func (m *Manager) pingTimeout() time.Duration {
	return max(m.cfg.HealthCheckInterval, minPingTimeout)
}

// lossBound is how long after its liveness flow goes silent the Manager
// declares the session (and every lock) lost: it pings every
// HealthCheckInterval and gives the answer pingTimeout.
func (m *Manager) lossBound() time.Duration {
	return m.cfg.HealthCheckInterval + m.pingTimeout()
}

// serverSilenceBound is how long the server lets a liveness session stay
// silent before ending it (idle_session_timeout, TCP keepalives,
// tcp_user_timeout): lossBound plus one more pingTimeout, so that the
// Manager normally declares its locks lost (and, if it can reach the
// server, ends the old session itself) before the server frees them.
func (m *Manager) serverSilenceBound() time.Duration {
	return m.lossBound() + m.pingTimeout()
}

// session is the liveness session: one dedicated connection per Manager that
// holds the session advisory lock (class, ownerID) for its whole life and
// LISTENs for releases. Leases name ownerID; when this connection's backend
// ends (process killed, connection terminated, server restarted), Postgres
// drops the advisory lock and every other instance may take the leases at
// once. An identity is never reused: after a reconnect the Manager gets a new
// ownerID and considers every lock of the old identity lost.
type session struct {
	conn    *pgx.Conn
	ownerID int32
	pid     uint32 // server process of conn, ended after a reconnect if still alive

	serverVersion int // server_version_num
}

// connect opens a liveness session with a fresh identity.
func (m *Manager) connect(ctx context.Context) (*session, error) {
	// Same settings as the pool's connections, with its own application_name
	// (role lock-liveness).
	cc := m.pool.Config().ConnConfig.Copy()
	connname.Set(cc, m.cfg.AppName, m.cfg.InstanceID, connname.RoleLockLiveness)
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("connect liveness session: %w", err)
	}
	s := &session{conn: conn, pid: conn.PgConn().PID()}
	err = func() error {
		// Server-side bounds on a silent client (serverSilenceBound): a
		// partitioned or frozen instance must not keep its identity lock,
		// and with it every lease it holds, until TCP gives up (hours).
		idle := max(1, m.cfg.HealthCheckInterval.Round(time.Second)/time.Second)
		probes := max(1, (m.serverSilenceBound()-m.cfg.HealthCheckInterval).Round(time.Second)/time.Second)
		if err := conn.QueryRow(ctx, m.q.sessionTimeouts,
			strconv.FormatInt(m.serverSilenceBound().Milliseconds(), 10),
			strconv.FormatInt(int64(idle), 10),
			strconv.FormatInt(int64(probes), 10),
		).Scan(&s.serverVersion, nil, nil, nil, nil, nil); err != nil {
			return fmt.Errorf("set session timeouts: %w", err)
		}
		if err := conn.QueryRow(ctx, m.q.newOwner).Scan(&s.ownerID); err != nil {
			return fmt.Errorf("new identity: %w", err)
		}
		var ok bool
		if err := conn.QueryRow(ctx, m.q.lockOwner, m.class, s.ownerID).Scan(&ok); err != nil {
			return fmt.Errorf("lock identity: %w", err)
		}
		if !ok {
			// Identities come from a sequence, so only a foreign user of the
			// same two-int advisory key space can be here.
			return fmt.Errorf("identity advisory lock (%d, %d) is held by another session", m.class, s.ownerID)
		}
		if _, err := conn.Exec(ctx, m.q.listen); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		// Designations to this identity arrive on a channel of its own.
		if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{ownChannel(m.channel, s.ownerID)}.Sanitize()); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		// Behind a transaction-mode pooler consecutive statements may run in
		// different server sessions: the identity lock and LISTEN would not
		// stay with this connection. Fail instead of handing out locks.
		var same bool
		if err := conn.QueryRow(ctx, `SELECT $1 = ANY (ARRAY(SELECT pg_listening_channels()))`, m.channel).Scan(&same); err != nil {
			return fmt.Errorf("check session: %w", err)
		}
		if !same {
			return errors.New("the connection does not keep its server session (a transaction-mode pooler?): session advisory locks and LISTEN need a direct or session-mode connection")
		}
		return nil
	}()
	if err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return s, nil
}

func (s *session) close(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = s.conn.Close(ctx)
}

// runLiveness owns the liveness session until ctx ends: it dispatches notifications,
// pings the idle connection, and on failure declares every lock lost and
// reconnects with a new identity.
func (m *Manager) runLiveness(ctx context.Context, s *session) {
	for {
		err := m.serve(ctx, s)
		if ctx.Err() != nil {
			// Close: ending the session drops the identity lock.
			s.close(context.WithoutCancel(ctx))
			return
		}
		m.livenessLost(err)
		s.close(ctx)
		old := s
		s, err = m.reconnect(ctx)
		if err != nil { // ctx ended
			return
		}
		m.endOldSession(ctx, s, old)
		m.goLive(s)
		m.log.Info("liveness session reconnected", slog.Int("owner_id", int(s.ownerID)))
		m.tel.reconnects.Add(ctx, 1, m.tel.none)
		// Releases sent while we were away were missed: every waiter re-checks.
		m.wakeAll()
	}
}

// serve waits for notifications on s until the connection fails or ctx ends.
// It pings every HealthCheckInterval, whether or not notifications arrive:
// the client must speak that often, or the server's idle_session_timeout
// would end a healthy session.
func (m *Manager) serve(ctx context.Context, s *session) error {
	next := time.Now().Add(m.cfg.HealthCheckInterval)
	for {
		wctx, cancel := context.WithDeadline(ctx, next)
		n, err := s.conn.WaitForNotification(wctx)
		cancel()
		if n != nil {
			m.dispatch(n.Payload)
		}
		switch {
		case err == nil:
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded) && !s.conn.IsClosed():
			// Check that the session is still there.
			pctx, pcancel := context.WithTimeout(ctx, m.pingTimeout())
			err = s.conn.Ping(pctx)
			pcancel()
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("ping: %w", err)
			}
			next = time.Now().Add(m.cfg.HealthCheckInterval)
		default:
			return err
		}
	}
}

// endOldSession ends, from the new session s, the server backend of the
// previous liveness session old if it still holds old's identity lock: a
// silent partition leaves that backend alive (no RST reached the server),
// and with it every lease of the old identity, which this Manager has
// already declared lost. pg_terminate_backend is allowed for backends of
// the same role; when it is not (a revoked EXECUTE, pg_signal_backend
// rules), the server's own timeouts on the liveness session end it within
// serverSilenceBound of its last message. Waiters of every instance are woken
// (NOTIFY "*") once the backend has exited.
func (m *Manager) endOldSession(ctx context.Context, s, old *session) {
	ctx, cancel := context.WithTimeout(ctx, endOldSessionTimeout)
	defer cancel()
	var ended bool
	q := m.q.endOldSession
	if s.serverVersion < 140000 {
		q = m.q.endOldSession13
	}
	err := s.conn.QueryRow(ctx, q, m.class, old.ownerID, int64(old.pid), endOldSessionTimeout.Milliseconds()-500, m.channel).Scan(&ended)
	attrs := []any{slog.Int("old_owner_id", int(old.ownerID)), slog.Int64("old_pid", int64(old.pid)), slog.Int("owner_id", int(s.ownerID))}
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		// Already gone: the connection was closed or terminated, or the server restarted.
	case errors.As(err, &pgErr) && pgErr.Code == "42501":
		m.log.Warn("not permitted to end the previous liveness session; its locks stay taken until the server's session timeouts end it",
			append(attrs, slog.Duration("bound", m.serverSilenceBound()), slog.Any("error", err))...)
	case err != nil:
		m.log.Warn("could not end the previous liveness session; its locks stay taken until the server's session timeouts end it",
			append(attrs, slog.Duration("bound", m.serverSilenceBound()), slog.Any("error", err))...)
	case !ended:
		m.log.Warn("the previous liveness session did not exit in time after pg_terminate_backend", attrs...)
	default:
		m.log.Info("ended the previous liveness session (silent connection); its locks are free", attrs...)
	}
}

// livenessLost declares every held lock lost: other instances may take
// them from now on, so nothing here may keep trusting them.
func (m *Manager) livenessLost(cause error) {
	m.mu.Lock()
	m.live = false
	held := make([]*Lock, 0, len(m.held))
	for l := range m.held {
		held = append(held, l)
	}
	m.signalLocked()
	m.mu.Unlock()
	m.log.Warn("liveness session lost; every held lock is lost", slog.Int("held", len(held)), slog.Any("error", cause))
	for _, l := range held {
		l.finish(stateLost)
	}
}

// reconnect retries connect with exponential backoff until it succeeds or ctx ends.
func (m *Manager) reconnect(ctx context.Context) (*session, error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 50 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	return backoff.Retry(ctx, func() (*session, error) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		s, err := m.connect(cctx)
		if err != nil {
			m.log.Warn("liveness session reconnect failed", slog.Any("error", err))
		}
		return s, err
	}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(0))
}
