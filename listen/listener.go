package listen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
)

// fetchChunk bounds the ids read from the log in one statement.
const fetchChunk = 500

// listener owns the instance's dedicated LISTEN connection. Only its
// goroutine uses the connection: notifications, polls and catch-up reads are
// serialised on it.
type listener struct {
	ps *PubSub
}

type idXid struct {
	id  int64
	xid uint64
}

// connect opens the LISTEN connection (not a pooled one: LISTEN is a session
// property), LISTENs, and reads the log. On the first connection it only
// records what is already committed (messages committed before Start are
// never delivered); on a reconnection it tells every subscription to resync
// and then delivers what was missed. LISTEN comes first, so a message
// committed between LISTEN and the read is seen twice and delivered once.
func (l *listener) connect(ctx context.Context, first bool) (*pgx.Conn, error) {
	ps := l.ps
	cfg := ps.pool.Config().ConnConfig.Copy()
	// A deadline, not a cancel request: the listener waits for
	// notifications with a deadline all the time, and the connection must
	// stay usable after one passes.
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	cctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if _, err := conn.Exec(cctx, "LISTEN "+pgx.Identifier{ps.physChannel}.Sanitize()); err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("listen: %w", err)
	}
	ps.listenerPID.Store(conn.PgConn().PID())
	if !first {
		ps.resyncAll()
	}
	if err := l.catchUp(cctx, conn, first, true); err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return conn, nil
}

// run serves conn until it fails, then reconnects with exponential backoff
// and jitter, until the PubSub closes.
func (l *listener) run(conn *pgx.Conn) {
	ps := l.ps
	ctx := ps.ctx
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 50 * time.Millisecond
	b.MaxInterval = ps.cfg.ReconnectMaxDelay
	b.RandomizationFactor = 0.5
	for {
		err := l.serve(ctx, conn)
		ps.healthy.Store(false)
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = conn.Close(closeCtx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		ps.logger.WarnContext(ctx, "listen: listener connection lost; reconnecting", slog.String("app", ps.cfg.AppName), slog.Any("error", err))
		b.Reset()
		for attempt := 0; ; attempt++ {
			if attempt > 0 {
				t := time.NewTimer(b.NextBackOff())
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
			conn, err = l.connect(ctx, false)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			ps.logger.WarnContext(ctx, "listen: reconnect failed", slog.String("app", ps.cfg.AppName), slog.Int("attempt", attempt+1), slog.Any("error", err))
		}
		ps.stats.reconnects.Add(1)
		if ctx.Err() == nil { // Close may have begun while connecting
			ps.healthy.Store(true)
		}
	}
}

// serve handles notifications on conn and polls the log every PollInterval,
// until an error (the connection is then discarded) or the PubSub closes.
func (l *listener) serve(ctx context.Context, conn *pgx.Conn) error {
	poll := l.ps.cfg.PollInterval
	next := time.Now().Add(poll)
	for {
		if time.Until(next) <= 0 {
			qctx, cancel := context.WithTimeout(ctx, queryTimeout)
			err := l.catchUp(qctx, conn, false, false)
			cancel()
			if err != nil {
				return err
			}
			next = time.Now().Add(poll)
			continue
		}
		wctx, cancel := context.WithDeadline(ctx, next)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if n != nil {
			if herr := l.handle(ctx, conn, n); herr != nil {
				return herr
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if wctx.Err() != nil && !conn.IsClosed() {
				continue // poll time
			}
			return err
		}
	}
}

// handle processes one notification.
func (l *listener) handle(ctx context.Context, conn *pgx.Conn, n *pgconn.Notification) error {
	ps := l.ps
	if n.Channel != ps.physChannel || n.Payload == "" {
		return nil
	}
	switch n.Payload[0] {
	case 'I':
		env, err := parseInline(n.Payload)
		if err != nil {
			ps.logger.ErrorContext(ctx, "listen: malformed notification", slog.Int("payload_bytes", len(n.Payload)), slog.Any("error", err))
			return nil
		}
		ps.dispatch([]envelope{env}, false)
	case 'R':
		id, xid, err := parseRef(n.Payload)
		if err != nil {
			ps.logger.ErrorContext(ctx, "listen: malformed notification", slog.Int("payload_bytes", len(n.Payload)), slog.Any("error", err))
			return nil
		}
		if ps.seen(id, xid) {
			return nil
		}
		qctx, cancel := context.WithTimeout(ctx, queryTimeout)
		defer cancel()
		envs, err := l.fetch(qctx, conn, []int64{id})
		if err != nil {
			return err
		}
		ps.dispatch(envs, false)
	case 'B':
		envs, err := parseBatch(n.Payload)
		if err != nil {
			ps.logger.ErrorContext(ctx, "listen: malformed notification", slog.Int("payload_bytes", len(n.Payload)), slog.Any("error", err))
			return nil
		}
		ps.dispatch(envs, false)
	case 'W':
		qctx, cancel := context.WithTimeout(ctx, queryTimeout)
		defer cancel()
		return l.catchUp(qctx, conn, false, false)
	}
	return nil
}

// errSwitchover ends serve when a poll finds that the server is not the one
// the watermark came from; the reconnection that follows resynchronises.
var errSwitchover = errors.New("the server is not the one the watermark came from")

// switchoverMargin widens the window of messages delivered from a new
// server after a switchover back from the last read on the old one, for
// transactions that began before that read and committed after it (and for
// clock differences between the two servers).
const switchoverMargin = 5 * time.Second

// logRead is the result of one read of the log.
type logRead struct {
	xmin     uint64    // the snapshot's xmin
	serverID int64     // the server's system_identifier
	at       time.Time // the database time of the read
	cands    []idXid   // rows to dispatch (on a first read: to mark seen)
	seenOnly []idXid   // rows to mark seen without dispatching (last column false)
}

func (l *listener) read(ctx context.Context, conn *pgx.Conn, sql string, args ...any) (logRead, error) {
	var r logRead
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return r, fmt.Errorf("read log: %w", err)
	}
	for rows.Next() {
		var (
			id     *int64
			xid    *uint64
			recent *bool
		)
		if err := rows.Scan(&r.xmin, &r.serverID, &r.at, &id, &xid, &recent); err != nil {
			rows.Close()
			return r, fmt.Errorf("read log: %w", err)
		}
		if id == nil || xid == nil {
			continue
		}
		if recent != nil && !*recent {
			r.seenOnly = append(r.seenOnly, idXid{*id, *xid})
			continue
		}
		r.cands = append(r.cands, idXid{*id, *xid})
	}
	if err := rows.Err(); err != nil {
		return r, fmt.Errorf("read log: %w", err)
	}
	return r, nil
}

// catchUp reads the log from the watermark: every committed message of the
// app addressed to this instance that was not dispatched yet is dispatched,
// in (xid, id) order, then the watermark moves to the snapshot's xmin.
// Bounding by xmin rather than by the highest id seen is what keeps a row
// whose transaction commits after a later id's from being skipped.
//
// Every read also checks that the server is the one the watermark came
// from (same system_identifier, xmin not below the watermark). When it is
// not, catchUp returns errSwitchover, unless connecting is set: then it
// resynchronises from the new server (see switchover).
func (l *listener) catchUp(ctx context.Context, conn *pgx.Conn, first, connecting bool) error {
	ps := l.ps
	if first {
		r, err := l.read(ctx, conn, ps.sql.initial, ps.cfg.AppName, ps.cfg.InstanceID)
		if err != nil {
			return err
		}
		ps.dmu.Lock()
		ps.serverID, ps.lastRead = r.serverID, r.at
		ps.dmu.Unlock()
		ps.markSeen(r.cands)
		ps.advance(r.xmin)
		return nil
	}
	ps.dmu.Lock()
	wm, serverID, pending := ps.watermark, ps.serverID, ps.switching
	ps.dmu.Unlock()
	if pending {
		// A switchover's resynchronisation failed half way: finish it.
		return l.switchover(ctx, conn, "")
	}
	r, err := l.read(ctx, conn, ps.sql.catchUp, ps.cfg.AppName, ps.cfg.InstanceID, wm)
	if err != nil {
		return err
	}
	var reason string
	switch {
	case r.serverID != serverID:
		reason = fmt.Sprintf("system_identifier changed from %d to %d", serverID, r.serverID)
	case r.xmin < wm:
		reason = fmt.Sprintf("transaction ids went back from %d to %d", wm, r.xmin)
	}
	if reason != "" {
		if !connecting {
			return fmt.Errorf("%w: %s", errSwitchover, reason)
		}
		return l.switchover(ctx, conn, reason)
	}
	if err := l.deliver(ctx, conn, r.cands); err != nil {
		return err
	}
	ps.dmu.Lock()
	ps.lastRead = r.at
	ps.dmu.Unlock()
	ps.advance(r.xmin)
	return nil
}

// deliver fetches and dispatches the candidates not dispatched yet.
func (l *listener) deliver(ctx context.Context, conn *pgx.Conn, cands []idXid) error {
	ps := l.ps
	missing := make([]int64, 0, 8)
	for _, c := range cands {
		if !ps.seen(c.id, c.xid) {
			missing = append(missing, c.id)
		}
	}
	for len(missing) > 0 {
		chunk := missing[:min(len(missing), fetchChunk)]
		missing = missing[len(chunk):]
		envs, err := l.fetch(ctx, conn, chunk)
		if err != nil {
			return err
		}
		ps.dispatch(envs, true)
	}
	return nil
}

// switchover resynchronises with a server that is not the one the watermark
// came from (a blue/green or logical-replication switchover, a restore, a
// DNS name moved): its transaction ids say nothing about what was delivered.
// The ledger restarts from the new server's snapshot; every message of its
// log published since the last read on the old server (less
// switchoverMargin) is delivered, possibly again, and messages committed on
// the old server after that read that the new one does not have are lost.
// Subscriptions got OnResync when the reconnection began.
func (l *listener) switchover(ctx context.Context, conn *pgx.Conn, reason string) error {
	ps := l.ps
	ps.dmu.Lock()
	if !ps.switching {
		// Until the resynchronisation below has finished, every read
		// resumes it (the ledger no longer describes any server).
		ps.switching = true
		ps.switchSince = ps.lastRead.Add(-switchoverMargin)
		ps.watermark = 0
		clear(ps.delivered)
	}
	since := ps.switchSince
	ps.dmu.Unlock()
	r, err := l.read(ctx, conn, ps.sql.switched, ps.cfg.AppName, ps.cfg.InstanceID, since)
	if err != nil {
		return err
	}
	if reason != "" {
		ps.stats.switchovers.Add(1)
		ps.logger.WarnContext(ctx, "listen: the listener reached another server than before; delivering its messages since the last read, exactly-once is void for them",
			slog.String("app", ps.cfg.AppName), slog.String("instance_id", ps.cfg.InstanceID),
			slog.String("reason", reason), slog.Time("since", since), slog.Int("messages", len(r.cands)))
	}
	if err := l.deliver(ctx, conn, r.cands); err != nil {
		return err
	}
	ps.markSeen(r.seenOnly)
	ps.dmu.Lock()
	ps.lastRead, ps.serverID, ps.switching = r.at, r.serverID, false
	ps.dmu.Unlock()
	ps.advance(r.xmin)
	return nil
}

// fetch reads messages by id, in (xid, id) order. Ids no longer in the log
// (pruned) are missing from the result.
func (l *listener) fetch(ctx context.Context, conn *pgx.Conn, ids []int64) ([]envelope, error) {
	return fetchMessages(ctx, conn, l.ps, ids)
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func fetchMessages(ctx context.Context, q querier, ps *PubSub, ids []int64) ([]envelope, error) {
	rows, err := q.Query(ctx, ps.sql.fetch, ps.cfg.AppName, ids)
	if err != nil {
		return nil, fmt.Errorf("fetch messages: %w", err)
	}
	defer rows.Close()
	envs := make([]envelope, 0, len(ids))
	for rows.Next() {
		var (
			e       envelope
			payload string
		)
		if err := rows.Scan(&e.msg.ID, &e.xid, &e.msg.Channel, &e.msg.Sender, &e.skipSelf, &e.onlySelf, &payload, &e.msg.PublishedAt); err != nil {
			return nil, fmt.Errorf("fetch messages: %w", err)
		}
		e.msg.Payload = []byte(payload)
		envs = append(envs, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("fetch messages: %w", err)
	}
	return envs, nil
}

var errMalformed = errors.New("malformed notification")

// parseHeader parses "<id>,<xid>,<unix_micros>,<flags>,<len1>,<len2>", the
// header of an inline message and of each message of a batch. It returns the
// envelope's fixed fields and the two lengths, which it checks against rest,
// the text after the header.
func parseHeader(h, rest string) (envelope, int, int, error) {
	var env envelope
	f := strings.Split(h, ",")
	if len(f) != 6 {
		return env, 0, 0, errMalformed
	}
	var nums [6]int64
	for i, s := range f {
		if i == 1 {
			continue
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return env, 0, 0, errMalformed
		}
		nums[i] = v
	}
	xid, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return env, 0, 0, errMalformed
	}
	l1, l2 := nums[4], nums[5]
	if l1 < 0 || l2 < 0 || l1+l2 > int64(len(rest)) {
		return env, 0, 0, errMalformed
	}
	env.msg.ID, env.xid = nums[0], xid
	env.msg.PublishedAt = microsTime(nums[2])
	env.skipSelf, env.onlySelf = nums[3]&1 != 0, nums[3]&2 != 0
	return env, int(l1), int(l2), nil
}

// parseInline parses "I<header>:<sender><channel><payload>" (see parseHeader;
// the two lengths are the sender's and the channel's).
func parseInline(p string) (envelope, error) {
	colon := strings.IndexByte(p, ':')
	if colon < 0 {
		return envelope{}, errMalformed
	}
	rest := p[colon+1:]
	env, sl, cl, err := parseHeader(p[1:colon], rest)
	if err != nil {
		return envelope{}, err
	}
	env.msg.Sender = rest[:sl]
	env.msg.Channel = rest[sl : sl+cl]
	env.msg.Payload = []byte(rest[sl+cl:])
	return env, nil
}

// parseRef parses "R<id>,<xid>".
func parseRef(p string) (int64, uint64, error) {
	idS, xidS, ok := strings.Cut(p[1:], ",")
	if !ok {
		return 0, 0, errMalformed
	}
	id, err := strconv.ParseInt(idS, 10, 64)
	if err != nil {
		return 0, 0, errMalformed
	}
	xid, err := strconv.ParseUint(xidS, 10, 64)
	if err != nil {
		return 0, 0, errMalformed
	}
	return id, xid, nil
}

func microsTime(us int64) time.Time { return time.UnixMicro(us) }
