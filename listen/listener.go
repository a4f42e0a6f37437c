package listen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pgcoord/pgcoord/internal/connname"
)

const (
	// fetchChunk bounds the messages fetched by id in one statement.
	fetchChunk = 500
	// pageSize bounds the rows one read of the log returns. A catch-up of
	// more rows takes several statements, with notifications handled in
	// between.
	pageSize = 500
)

// errSwitchover ends serve when a read finds that the server is not the one
// the ledger came from; the reconnection that follows resynchronises.
var errSwitchover = errors.New("the server is not the one the ledger came from")

// switchoverMargin widens the window of messages delivered from a new
// server after a switchover back from the last read on the old one, for
// transactions that began before that read and committed after it (and for
// clock differences between the two servers).
const switchoverMargin = 5 * time.Second

// listener owns the instance's dedicated LISTEN connection. Only its
// goroutine uses the connection: notifications, polls and catch-up reads are
// serialised on it.
type listener struct {
	ps *PubSub
	// done is an ended context: WaitForNotification with it returns a
	// notification pgx already buffered, without reading the connection.
	done context.Context
}

func newListener(ps *PubSub) *listener {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	return &listener{ps: ps, done: done}
}

// logRow is one row of a page of the log.
type logRow struct {
	id      int64
	xid     uint64
	channel string
}

// catchUp is one read of the log, in pages: the rows of the transactions
// that had not ended in from (or, after a switchover, published since
// since). p is the snapshot of its first page; when the last page is read
// the ledger moves to p.
type catchUp struct {
	from     snapshot
	since    time.Time // non-zero: after a switchover
	started  bool
	p        snapshot
	serverID int64
	at       time.Time
	curXid   uint64
	curID    int64
	// resumed: a catch-up begun on a connection since lost; another
	// follows at once (for what was committed since its first page), and
	// the listener is healthy once that one has finished.
	resumed bool
}

// connect opens the LISTEN connection (not a pooled one: LISTEN is a session
// property) and LISTENs. On the first connection it records the current
// snapshot (messages committed before Start are never delivered) and
// returns a nil catch-up; on a reconnection it tells every subscription to
// resync and returns the catch-up to run (resume, the one the lost
// connection left unfinished, or a new one), whose next page it has read (so
// a switchover is found here). Resuming keeps a catch-up that takes many
// pages from starting over at every reconnection: the rows committed
// meanwhile are read by the next one, which starts from the snapshot of
// resume's first page. LISTEN comes first, so a message committed
// between LISTEN and the read is seen twice and delivered once.
func (l *listener) connect(ctx context.Context, first bool, resume *catchUp) (*pgx.Conn, *catchUp, error) {
	ps := l.ps
	cfg := ps.pool.Config().ConnConfig.Copy()
	// A deadline, not a cancel request: the listener waits for
	// notifications with a deadline all the time, and the connection must
	// stay usable after one passes.
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	// Reads of the log page through the (app, xid, id) index in its order
	// from the cursor. A generic plan (pgx prepares statements) does not
	// know where the cursor is, and with stale statistics the planner may
	// prefer a bitmap scan that sorts every new row for each page: either
	// makes each page cost the whole log.
	cfg.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
	cfg.RuntimeParams["enable_bitmapscan"] = "off"
	connname.Set(cfg, ps.cfg.AppName, ps.cfg.InstanceID, connname.RoleListen)
	cctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("connect: %w", err)
	}
	fail := func(err error) (*pgx.Conn, *catchUp, error) {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, nil, err
	}
	if _, err := conn.Exec(cctx, "LISTEN "+pgx.Identifier{ps.physChannel}.Sanitize()); err != nil {
		return fail(fmt.Errorf("listen: %w", err))
	}
	ps.listenerPID.Store(conn.PgConn().PID())
	if first {
		p, serverID, at, newest, err := l.read(cctx, conn, ps.sql.first, ps.cfg.AppName)
		if err != nil {
			return fail(err)
		}
		ps.led.begin(p, serverID, at, newest)
		if _, _, err := l.restarted(cctx, conn); err != nil {
			return fail(err)
		}
		return conn, nil, nil
	}
	ps.resyncAll()
	restarted, kept, err := l.restarted(cctx, conn)
	if err != nil {
		return fail(err)
	}
	c := resume
	switch {
	case restarted && kept:
		// The transactions after the last row seen may have been lost
		// and their ids handed out again: read from that row.
		ps.led.rewind()
		ps.logger.InfoContext(ctx, "listen: the server restarted; reading the log again from the last message seen",
			slog.String("app", ps.cfg.AppName), slog.String("instance_id", ps.cfg.InstanceID))
		c = l.newCatchUp()
	case restarted:
		// Commits the listener read may be gone (a crash lost the
		// autocommit Publishes not yet flushed, a failover what the
		// replica had not received), and their ids may be handed out
		// again.
		c = &catchUp{}
		l.switchover(ctx, c, "the server restarted without the last message read from it (commits lost in a crash or a failover)")
	case c == nil:
		c = l.newCatchUp()
	default:
		c.resumed = true
	}
	rctx, rcancel := context.WithTimeout(ctx, ps.readTimeout)
	defer rcancel()
	done, err := l.page(rctx, conn, c, true)
	if err != nil {
		return fail(err)
	}
	if done && !c.resumed {
		return conn, nil, nil
	}
	if done {
		c = l.newCatchUp() // for what was committed since the resumed one began
	}
	return conn, c, nil
}

// restarted reads the server's start time on a new connection and reports
// whether the server restarted (a restart, a crash, a failover) since the
// previous connection, and if so whether the last row the ledger saw is
// still in the log: the WAL up to its commit survived.
func (l *listener) restarted(ctx context.Context, conn *pgx.Conn) (restarted, kept bool, err error) {
	ps := l.ps
	var startedAt time.Time
	lastID, lastXid, hasLast := ps.led.last()
	if err := conn.QueryRow(ctx, ps.sql.restarted, ps.cfg.AppName, lastID, strconv.FormatUint(lastXid, 10)).Scan(&startedAt, &kept); err != nil {
		return false, false, fmt.Errorf("read server start: %w", err)
	}
	return ps.led.restarted(startedAt), kept && hasLast, nil
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
	var c *catchUp
	for {
		unfinished, err := l.serve(ctx, conn, c)
		ps.setHealthy(false)
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
			conn, c, err = l.connect(ctx, false, unfinished)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			ps.logger.WarnContext(ctx, "listen: reconnect failed", slog.String("app", ps.cfg.AppName), slog.Int("attempt", attempt+1), slog.Any("error", err))
		}
		ps.count(&ps.stats.reconnects, 1)
	}
}

// serve handles notifications on conn and reads the log (a catch-up) every
// PollInterval and on wake-ups, until an error (the connection is then
// discarded) or the PubSub closes. c, when not nil, is the catch-up of a
// reconnection: the listener is healthy once it has finished. A catch-up of
// several pages handles the notifications that arrived in between: those of
// messages it has passed are delivered at once, the others when it reaches
// them (see handle), which keeps each publisher's order.
//
// Wake-ups already received are coalesced: one catch-up reads for all of
// them. A notification that arrives after a wake-up waits for the catch-up
// the wake-up asked for, which keeps a publisher's messages in commit order
// when some come inline and some by wake-up.
func (l *listener) serve(ctx context.Context, conn *pgx.Conn, c *catchUp) (*catchUp, error) {
	ps := l.ps
	poll := ps.cfg.PollInterval
	next := time.Now().Add(poll)
	wanted := false // a catch-up was asked for (wake-up, poll)
	if c == nil {
		ps.setHealthy(ctx.Err() == nil)
	}
	var held *pgconn.Notification // taken from the buffer, handled after the catch-up
	// Waits for a notification end at the next poll by the socket's read
	// deadline, not a context per wait (a timer, a context and a watcher
	// for every notification); the PubSub closing ends a wait the same way.
	netConn := conn.PgConn().Conn()
	stop := context.AfterFunc(ctx, func() { _ = netConn.SetReadDeadline(time.Now()) })
	defer stop()
	for {
		if c == nil && wanted {
			c, wanted = l.newCatchUp(), false
		}
		if c != nil {
			qctx, cancel := context.WithTimeout(ctx, ps.readTimeout)
			done, err := l.page(qctx, conn, c, false)
			cancel()
			if err != nil {
				return c, err
			}
			if done {
				if c.resumed {
					// Started before the connection was lost: read what
					// was committed since, before being healthy.
					c = l.newCatchUp()
					continue
				}
				c = nil
				next = time.Now().Add(poll)
				ps.setHealthy(ctx.Err() == nil) // Close may have begun
			}
		}

		// The next notification: a held one, then those pgx buffered
		// during the reads; wait on the connection only when idle.
		var n *pgconn.Notification
		switch {
		case held != nil:
			n, held = held, nil
		case c != nil || wanted:
			if n = l.buffered(conn); n == nil {
				continue
			}
		default:
			if time.Until(next) <= 0 {
				wanted = true
				continue
			}
			var err error
			n, err = l.wait(ctx, conn, netConn, next)
			if n == nil {
				if ctx.Err() != nil {
					return c, ctx.Err()
				}
				if pgconn.Timeout(err) && !conn.IsClosed() {
					continue // poll time
				}
				return c, err
			}
		}
		if n.Channel != ps.physChannel {
			continue
		}
		if isWake(n.Payload) {
			wanted = true
			for { // coalesce the wake-ups already received
				m := l.buffered(conn)
				if m == nil {
					break
				}
				if m.Channel == ps.physChannel && !isWake(m.Payload) {
					held = m
					break
				}
			}
			continue
		}
		if wanted && c == nil {
			held = n // the catch-up first
			continue
		}
		nt, err := decodeNotification(n.Payload)
		if err != nil {
			ps.logger.ErrorContext(ctx, "listen: malformed notification", slog.String("app", ps.cfg.AppName), slog.Int("payload_bytes", len(n.Payload)), slog.Any("error", err))
			continue
		}
		if err := l.handle(ctx, conn, nt, c); err != nil {
			return c, err
		}
	}
}

// wait returns the next notification on conn (at once when pgx has one
// buffered), or nil and a timeout error at deadline or once ctx ends
// (serve's AfterFunc moves the read deadline).
func (l *listener) wait(ctx context.Context, conn *pgx.Conn, netConn net.Conn, deadline time.Time) (*pgconn.Notification, error) {
	if err := netConn.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	defer func() { _ = netConn.SetReadDeadline(time.Time{}) }()
	if err := ctx.Err(); err != nil { // ended before the deadline was set
		return nil, err
	}
	return conn.WaitForNotification(context.Background())
}

// buffered returns a notification pgx has already received, or nil. It
// never reads the connection.
func (l *listener) buffered(conn *pgx.Conn) *pgconn.Notification {
	n, _ := conn.WaitForNotification(l.done)
	return n
}

// handle processes one notification other than a wake-up. c is the
// catch-up under way, if any: a message it has not reached yet is left to
// it, so a publisher's messages keep their order (a sequential publisher's
// earlier transactions have lower xids, and the catch-up reads in (xid, id)
// order; the message committed before its notification arrived, so the
// catch-up's next page sees it).
func (l *listener) handle(ctx context.Context, conn *pgx.Conn, nt notification, c *catchUp) error {
	ps := l.ps
	switch nt.kind {
	case kindInline:
		envs := nt.envs
		if c != nil {
			envs = slices.DeleteFunc(envs, func(e envelope) bool { return !c.passed(e.xid, e.msg.ID) })
		}
		ps.dispatch(envs, false)
	case kindRef:
		if ps.led.seen(nt.id, nt.xid) || (c != nil && !c.passed(nt.xid, nt.id)) {
			return nil
		}
		qctx, cancel := context.WithTimeout(ctx, ps.readTimeout)
		defer cancel()
		envs, err := l.fetch(qctx, conn, []int64{nt.id})
		if err != nil {
			return err
		}
		ps.dispatch(envs, false)
	}
	return nil
}

// passed reports whether the catch-up has read every row up to (xid, id):
// delivering that message now keeps its publisher's order.
func (c *catchUp) passed(xid uint64, id int64) bool {
	return c.started && (xid < c.curXid || (xid == c.curXid && id <= c.curID))
}

// newCatchUp starts a catch-up from the ledger: from its snapshot, or,
// after a switchover that has not finished, from the switchover's time.
func (l *listener) newCatchUp() *catchUp {
	snap, _, switching, since := l.ps.led.state()
	c := &catchUp{from: snap}
	if switching {
		c.since = since
	}
	return c
}

// read runs one read of the log and returns its snapshot, server identity
// and time (the first row) and its rows, in (xid, id) order.
func (l *listener) read(ctx context.Context, conn *pgx.Conn, sql string, args ...any) (p snapshot, serverID int64, at time.Time, rows []logRow, err error) {
	l.ps.count(&l.ps.stats.logReads, 1)
	rs, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return p, 0, at, nil, fmt.Errorf("read log: %w", err)
	}
	defer rs.Close()
	headSeen := false
	// Value types, not pointers: a row costs no allocation but its channel.
	var (
		snap, xid, channel pgtype.Text
		sys, id            pgtype.Int8
		t                  pgtype.Timestamptz
	)
	for rs.Next() {
		if err := rs.Scan(&snap, &sys, &t, &id, &xid, &channel); err != nil {
			return p, 0, at, nil, fmt.Errorf("read log: %w", err)
		}
		if snap.Valid {
			if p, err = parseSnapshot(snap.String); err != nil {
				return p, 0, at, nil, fmt.Errorf("read log: %w", err)
			}
			serverID, at, headSeen = sys.Int64, t.Time, true
			continue
		}
		x, err := strconv.ParseUint(xid.String, 10, 64)
		if err != nil {
			return p, 0, at, nil, fmt.Errorf("read log: xid %q: %w", xid.String, err)
		}
		rows = append(rows, logRow{id: id.Int64, xid: x, channel: channel.String})
	}
	if err := rs.Err(); err != nil {
		return p, 0, at, nil, fmt.Errorf("read log: %w", err)
	}
	if !headSeen {
		return p, 0, at, nil, errors.New("read log: no snapshot row")
	}
	slices.SortFunc(rows, func(a, b logRow) int {
		if a.xid != b.xid {
			if a.xid < b.xid {
				return -1
			}
			return 1
		}
		return int(a.id - b.id)
	})
	return p, serverID, at, rows, nil
}

// page reads and dispatches the next page of c and reports whether c has
// finished (the ledger then moved to c's first snapshot). Every page checks
// that the server is still the one the ledger came from: the same
// system_identifier, and transaction ids not below the ledger's. When it is
// not, page returns errSwitchover, unless connecting is set: then it starts
// the resynchronisation from the new server (see switchover).
func (l *listener) page(ctx context.Context, conn *pgx.Conn, c *catchUp, connecting bool) (bool, error) {
	ps := l.ps
	// The range branch starts after the larger of the cursor and
	// (from.xmax, -1).
	startXid, startID := c.from.xmax, int64(-1)
	if c.curXid > startXid || (c.curXid == startXid && c.curID > startID) {
		startXid, startID = c.curXid, c.curID
	}
	sql, bound := ps.sql.page, any(strconv.FormatUint(startXid, 10))
	if !c.since.IsZero() {
		sql, bound = ps.sql.switched, c.since
	}
	p, serverID, at, rows, err := l.read(ctx, conn, sql, ps.cfg.AppName, ps.cfg.InstanceID,
		bound, c.from.xipFrom(c.curXid), strconv.FormatUint(c.curXid, 10), c.curID, pageSize, startID)
	if err != nil {
		return false, err
	}
	if c.since.IsZero() {
		_, ledgerServer, _, _ := ps.led.state()
		var reason string
		switch {
		case serverID != ledgerServer:
			reason = fmt.Sprintf("system_identifier changed from %d to %d", ledgerServer, serverID)
		case p.xmax < c.from.xmax:
			reason = fmt.Sprintf("transaction ids went back from %d to %d", c.from.xmax, p.xmax)
		}
		if reason != "" {
			if !connecting {
				return false, fmt.Errorf("%w: %s", errSwitchover, reason)
			}
			l.switchover(ctx, c, reason)
			return l.page(ctx, conn, c, false)
		}
	}
	if !c.started {
		c.started, c.p, c.serverID = true, p, serverID
	}
	c.at = at
	if len(rows) > pageSize {
		rows = rows[:pageSize]
	}
	if want := ps.claimUnwanted(rows); len(want) > 0 {
		if err := l.deliver(ctx, conn, want); err != nil {
			return false, err // the cursor stays: a resumed catch-up reads them again
		}
	}
	if len(rows) > 0 {
		last := rows[len(rows)-1]
		c.curXid, c.curID = last.xid, last.id
	}
	if len(rows) == pageSize {
		return false, nil
	}
	if serverID != c.serverID {
		return false, fmt.Errorf("%w: system_identifier changed during a catch-up", errSwitchover)
	}
	ps.led.complete(c.p, c.serverID, c.at)
	return true, nil
}

// deliver fetches and dispatches messages by id.
func (l *listener) deliver(ctx context.Context, conn *pgx.Conn, ids []int64) error {
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), fetchChunk)]
		ids = ids[len(chunk):]
		envs, err := l.fetch(ctx, conn, chunk)
		if err != nil {
			return err
		}
		l.ps.dispatch(envs, true)
	}
	return nil
}

// switchover turns c into the resynchronisation with a server that is not
// the one the ledger came from (a blue/green or logical-replication
// switchover, a restore, a DNS name moved): its transaction ids say nothing
// about what was delivered. The ledger empties; every message of the new
// server's log published since the last read on the old server (less
// switchoverMargin) is delivered, possibly again, and messages committed on
// the old server after that read that the new one does not have are lost.
// Subscriptions got OnResync when the reconnection began.
func (l *listener) switchover(ctx context.Context, c *catchUp, reason string) {
	ps := l.ps
	since := ps.led.startSwitch(switchoverMargin)
	ps.count(&ps.stats.switchovers, 1)
	ps.logger.WarnContext(ctx, "listen: the listener reached another server than before; delivering its messages since the last read, exactly-once is void for them",
		slog.String("app", ps.cfg.AppName), slog.String("instance_id", ps.cfg.InstanceID),
		slog.String("reason", reason), slog.Time("since", since))
	*c = catchUp{since: since}
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
			headers *string
		)
		if err := rows.Scan(&e.msg.ID, &e.xid, &e.msg.Channel, &e.msg.Sender, &e.skipSelf, &e.onlySelf, &payload, &e.msg.PublishedAt, &headers); err != nil {
			return nil, fmt.Errorf("fetch messages: %w", err)
		}
		e.msg.Payload = []byte(payload)
		if headers != nil {
			// The column's CHECK keeps it an object; a value that is not
			// one of strings (written by hand) is ignored, not fatal.
			if json.Unmarshal([]byte(*headers), &e.headers) == nil && len(e.headers) > 0 {
				e.msg.Headers = e.headers
			} else {
				e.headers = nil
			}
		}
		envs = append(envs, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("fetch messages: %w", err)
	}
	return envs, nil
}
