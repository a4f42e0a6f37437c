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

	"github.com/pgcoord/pgcoord/listen"
)

const (
	// tailWake bounds how long the tail waits for a notification before it
	// reads the log anyway and looks for apps that started publishing.
	tailWake = 2 * time.Second
	// tailReread is how many ids below the highest one seen are read again
	// at every wake, so a message whose id committed after a higher id's is
	// still shown (ids are assigned at insert, not at commit).
	tailReread = 64
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
	return &tail{pool: pool, schema: schema, msgs: ident(schema, "messages"), logger: logger, subs: map[*tailSub]struct{}{}}
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

// run keeps a LISTEN session open until ctx ends, reconnecting with a
// growing pause after a failure.
func (t *tail) run(ctx context.Context, g *tailGen) {
	defer close(g.done)
	var last int64 = -1
	pause := 100 * time.Millisecond
	for {
		err := t.session(ctx, g, &last)
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
func (t *tail) session(ctx context.Context, g *tailGen, last *int64) error {
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
	if err := t.listenApps(ctx, conn, listening); err != nil {
		return err
	}
	if *last < 0 {
		if err := conn.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM `+t.msgs).Scan(last); err != nil {
			return fmt.Errorf("read the log: %w", err)
		}
	}
	g.readyOnce.Do(func() { close(g.ready) })
	seen, start := map[int64]bool{}, *last
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
			if err := t.listenApps(ctx, conn, listening); err != nil {
				return err
			}
		}
		if err := t.read(ctx, conn, start, last, seen); err != nil {
			return err
		}
	}
}

// listenApps LISTENs on the channel of every app that has messages in the
// log and is not listened to yet. The apps are found with a loose index
// scan over (app, xid, id): one index probe per app.
func (t *tail) listenApps(ctx context.Context, conn *pgx.Conn, listening map[string]bool) error {
	apps, err := collect(ctx, conn, "list apps", `WITH RECURSIVE a AS (
		(SELECT app FROM `+t.msgs+` ORDER BY app LIMIT 1)
		UNION ALL
		SELECT (SELECT m.app FROM `+t.msgs+` m WHERE m.app > a.app ORDER BY m.app LIMIT 1) FROM a WHERE a.app IS NOT NULL
	) SELECT app FROM a WHERE app IS NOT NULL`, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, app := range apps {
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

// read broadcasts the messages after *last, and those of the tailReread
// ids below it not shown yet, but none at or below start (the last id when
// the session began: history, or shown by an earlier session).
func (t *tail) read(ctx context.Context, conn *pgx.Conn, start int64, last *int64, seen map[int64]bool) error {
	floor := max(start, *last-tailReread)
	ms, err := collect(ctx, conn, "read the log", `SELECT `+messageCols+` FROM `+t.msgs+` m WHERE m.id > $1 AND m.sender <> '' ORDER BY m.id LIMIT 1000`, scanMessage, floor)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if seen[m.ID] {
			continue
		}
		seen[m.ID] = true
		*last = max(*last, m.ID)
		t.broadcast(m)
	}
	for id := range seen {
		if id <= *last-tailReread {
			delete(seen, id)
		}
	}
	return nil
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
