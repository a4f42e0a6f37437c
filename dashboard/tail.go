package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/internal/inspectq"
	"github.com/pgcoord/pgcoord/listen"
)

const (
	// tailWake bounds how long the tail waits for a notification before it
	// reads the log anyway and looks for apps that started publishing.
	tailWake = 2 * time.Second
	// tailMaxRead is how many new messages one read of the log shows; the
	// rest of a larger backlog (after the tail's connection was down a
	// long time) is skipped and counted in every stream's "dropped" event.
	tailMaxRead = 1000
	// tailBuffer is each stream's queue; a stream that falls further behind
	// loses messages (counted in its "dropped" event).
	tailBuffer = 256
	// tailKeepalive is the interval of SSE comments that keep proxies from
	// closing an idle stream.
	tailKeepalive = 15 * time.Second
)

// tail is the live tail's hub: one LISTEN connection, opened while at least
// one stream is connected, fans messages out to every stream.
type tail struct {
	pool   *pgxpool.Pool
	schema string
	msgs   string
	logger *slog.Logger

	// mu guards subs and gen.
	mu   sync.Mutex
	subs map[*tailSub]struct{}
	gen  *tailGen // the running connection loop; nil when no stream is connected
}

// tailGen is one run of the connection loop.
type tailGen struct {
	cancel    context.CancelFunc
	done      chan struct{}
	ready     chan struct{} // closed once LISTEN is in place
	readyOnce sync.Once
}

type tailSub struct {
	ch      chan Message
	gone    chan struct{} // closed by tail.close
	dropped int           // guarded by tail.mu
}

func newTail(pool *pgxpool.Pool, schema string, logger *slog.Logger) *tail {
	return &tail{pool: pool, schema: schema, msgs: inspectq.Table(schema, "messages"), logger: logger, subs: map[*tailSub]struct{}{}}
}

// subscribe adds a stream, starting the connection loop for the first one.
// ready is closed once the loop listens.
func (t *tail) subscribe() (sub *tailSub, ready <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	sub = &tailSub{ch: make(chan Message, tailBuffer), gone: make(chan struct{})}
	t.subs[sub] = struct{}{}
	if t.gen == nil {
		ctx, cancel := context.WithCancel(context.Background())
		g := &tailGen{cancel: cancel, done: make(chan struct{}), ready: make(chan struct{})}
		t.gen = g
		go t.run(ctx, g)
	}
	return sub, t.gen.ready
}

// unsubscribe removes a stream; the last one stops the connection loop and
// waits for it.
func (t *tail) unsubscribe(sub *tailSub) {
	t.mu.Lock()
	delete(t.subs, sub)
	var g *tailGen
	if len(t.subs) == 0 && t.gen != nil {
		g, t.gen = t.gen, nil
	}
	t.mu.Unlock()
	if g != nil {
		g.cancel()
		<-g.done
	}
}

// close ends every stream and the connection loop.
func (t *tail) close() {
	t.mu.Lock()
	for sub := range t.subs {
		close(sub.gone)
		delete(t.subs, sub)
	}
	g := t.gen
	t.gen = nil
	t.mu.Unlock()
	if g != nil {
		g.cancel()
		<-g.done
	}
}

func (t *tail) broadcast(m Message) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for sub := range t.subs {
		select {
		case sub.ch <- m:
		default:
			sub.dropped++
		}
	}
}

// tailCursor is where the tail is in the log, kept across reconnections.
//
// Ids are assigned at insert, not at commit, so the tail tracks
// transactions, as listen's catch-up does: prev is the snapshot of the
// latest read, and a read shows the rows whose transaction had not ended
// in it (xid at or above its xmax, or in its xip) and has committed since.
// A transaction that stays open while any number of later ones commit is
// shown when it commits.
type tailCursor struct {
	// base is the snapshot when the tail first connected: what had ended
	// then is history, never shown. An app found in the log later is read
	// from base once (its messages since the tail started), then from prev.
	base, prev string
	apps       []string        // every app found in the log
	known      map[string]bool // apps read from prev
}

// run keeps a LISTEN session open until ctx ends, reconnecting with a
// growing pause after a failure.
func (t *tail) run(ctx context.Context, g *tailGen) {
	defer close(g.done)
	cur := &tailCursor{known: map[string]bool{}}
	pause := 100 * time.Millisecond
	for {
		err := t.session(ctx, g, cur)
		if ctx.Err() != nil {
			return
		}
		t.logger.WarnContext(ctx, "dashboard: live tail connection failed; reconnecting",
			slog.String("component", "dashboard"), slog.Any("error", err), slog.Duration("retry_in", pause))
		if !pauseFor(ctx, pause) {
			return
		}
		pause = min(2*pause, 5*time.Second)
	}
}

// pauseFor waits d; false when ctx ended first.
func pauseFor(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// session runs one connection: LISTEN on every app's channel, then read
// the log after each notification (or every tailWake).
func (t *tail) session(ctx context.Context, g *tailGen, cur *tailCursor) error {
	cfg := t.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = "pgcoord/dashboard/tail"
	// A deadline, not a cancel request: waits end by deadline all the time
	// and the connection must stay usable after one passes.
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = conn.Close(cctx)
		cancel()
	}()
	listening := map[string]bool{}
	if err := t.listenApps(ctx, conn, listening, cur); err != nil {
		return err
	}
	if cur.base == "" {
		// After LISTEN: a message committed from now on is either after
		// this snapshot or wakes the tail.
		if err := conn.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&cur.base); err != nil {
			return fmt.Errorf("read the log: %w", err)
		}
		cur.prev = cur.base
		for _, app := range cur.apps {
			cur.known[app] = true
		}
	}
	g.readyOnce.Do(func() { close(g.ready) })
	for {
		wctx, cancel := context.WithTimeout(ctx, tailWake)
		_, err := conn.WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		woken := err == nil
		if err != nil && !errors.Is(err, context.DeadlineExceeded) && !pgconn.Timeout(err) {
			return err
		}
		if !woken {
			if err := t.listenApps(ctx, conn, listening, cur); err != nil {
				return err
			}
		}
		if err := t.read(ctx, conn, cur); err != nil {
			return err
		}
	}
}

// listenApps LISTENs on the channel of every app that has messages in the
// log and is not listened to yet, and adds new apps to cur.apps. The apps
// are found with a loose index scan over (app, xid, id): one index probe
// per app.
func (t *tail) listenApps(ctx context.Context, conn *pgx.Conn, listening map[string]bool, cur *tailCursor) error {
	apps, err := collect(ctx, conn, "list apps", `WITH RECURSIVE a AS (
		(SELECT app FROM `+t.msgs+` ORDER BY app LIMIT 1)
		UNION ALL
		SELECT (SELECT m.app FROM `+t.msgs+` m WHERE m.app > a.app ORDER BY m.app LIMIT 1) FROM a WHERE a.app IS NOT NULL
	) SELECT app FROM a WHERE app IS NOT NULL`, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, app := range apps {
		if !contains(cur.apps, app) {
			cur.apps = append(cur.apps, app)
		}
		ch := listen.NotifyChannel(t.schema, app)
		if listening[ch] {
			continue
		}
		// ch is "pgcoord_" and hex digits: a safe identifier, quoted anyway.
		if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{ch}.Sanitize()); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		listening[ch] = true
	}
	return nil
}

// read broadcasts the messages committed since the previous read (see
// tailCursor), at most tailMaxRead of them, in (xid, id) order per app.
// The snapshot and the rows come from one repeatable-read transaction, so
// the next read starts exactly where this one's rows end.
func (t *tail) read(ctx context.Context, conn *pgx.Conn, cur *tailCursor) error {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("read the log: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var snap string
	if err := tx.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&snap); err != nil {
		return fmt.Errorf("read the log: %w", err)
	}
	var old, fresh []string
	for _, app := range cur.apps {
		if cur.known[app] {
			old = append(old, app)
		} else {
			fresh = append(fresh, app)
		}
	}
	shown, skipped := 0, 0
	for _, r := range []struct {
		apps []string
		from string
	}{{old, cur.prev}, {fresh, cur.base}} {
		if len(r.apps) == 0 {
			continue
		}
		var m Message
		err := each(ctx, tx, "read the log", t.readSQL(), []any{&m.ID, &m.App, &m.Channel, &m.Sender, &m.Preview, &m.PayloadBytes, &m.AgeMillis, &m.PublishedAt}, func() error {
			if shown == tailMaxRead {
				skipped++
				return nil
			}
			shown++
			t.broadcast(m)
			return nil
		}, r.apps, r.from)
		if err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("read the log: %w", err)
	}
	cur.prev = snap
	for _, app := range fresh {
		cur.known[app] = true
	}
	if skipped > 0 {
		t.drop(skipped)
	}
	return nil
}

// readSQL selects the messages of apps $1 whose transaction had not ended
// in snapshot $2: at or above its xmax, or in its xip, each through the
// (app, xid, id) index (a long transaction holding the snapshot's xmin back
// does not make the read longer). Rows of transactions still open are not
// visible yet; retention markers (empty sender) are not messages.
func (t *tail) readSQL() string {
	return `SELECT ` + messageCols + ` FROM unnest($1::text[]) a(app) CROSS JOIN LATERAL (
		(SELECT * FROM ` + t.msgs + ` x WHERE x.app = a.app AND x.xid >= pg_snapshot_xmax($2::pg_snapshot))
		UNION ALL
		(SELECT * FROM ` + t.msgs + ` x WHERE x.app = a.app AND x.xid = ANY (ARRAY(SELECT pg_snapshot_xip($2::pg_snapshot))))
	) m WHERE m.sender <> '' ORDER BY m.app, m.xid, m.id`
}

// drop counts n messages as dropped on every stream.
func (t *tail) drop(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for sub := range t.subs {
		sub.dropped += n
	}
}

// serveTail streams the live tail as Server-Sent Events: an "ready" event
// once the dashboard listens, then one "message" event per published
// message (JSON of [Message]); a "dropped" event when this stream fell
// behind. Optional query parameters app and channel filter the stream.
func (h *Handler) serveTail(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	app, channel := r.URL.Query().Get("app"), r.URL.Query().Get("channel")
	sub, ready := h.tail.subscribe()
	defer h.tail.unsubscribe(sub)
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(format string, args ...any) bool {
		if _, err := fmt.Fprintf(w, format, args...); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send(": pgcoord dashboard live tail\n\n") {
		return
	}
	select {
	case <-ready:
	case <-r.Context().Done():
		return
	case <-sub.gone:
		return
	}
	if !send("event: ready\ndata: {}\n\n") {
		return
	}
	keep := time.NewTicker(tailKeepalive)
	defer keep.Stop()
	reported := 0
	for {
		select {
		case <-r.Context().Done():
			return
		case <-sub.gone:
			return
		case <-keep.C:
			if !send(": keepalive\n\n") {
				return
			}
		case m := <-sub.ch:
			if (app != "" && m.App != app) || (channel != "" && m.Channel != channel) {
				continue
			}
			b, err := json.Marshal(m)
			if err != nil {
				continue
			}
			if !send("event: message\ndata: %s\n\n", b) {
				return
			}
			h.tail.mu.Lock()
			d := sub.dropped
			h.tail.mu.Unlock()
			if d != reported {
				reported = d
				if !send("event: dropped\ndata: %d\n\n", d) {
					return
				}
			}
		}
	}
}
