package integration_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/pgcache"
	"github.com/pgcoord/pgcoord/queue"
)

// A cluster node is this test binary re-executed with -test.run=^TestNodeProcess$
// and envNode set to a JSON nodeConfig. It runs one app.App instance and a
// bounded mixed workload, and reports everything it did and saw as JSON lines
// (event) on stdout. The parent drives it with lines on stdin:
//
//	go    start the workload (unless AutoStart)
//	stop  stop the workload; consumers keep running
//
// When its stdin closes the node reads every known cache key one last time,
// stops the app and exits 0.
const envNode = "PGCOORD_IT_NODE"

// Channels, keys and tables of the workload.
const (
	pubsubChannel = "it.events"
	queueChannel  = "it.work"
	counterLock   = "it-counter"
	counterTable  = "public.it_counter"
	counterLog    = "public.it_counter_log"
	probePlugin   = "probe"
	keysPerWriter = 4
	staleAfter    = 5 * time.Second
	queueWork     = 40 * time.Millisecond
)

// nodeConfig is what the parent passes to a node.
type nodeConfig struct {
	URL       string `json:"url"`
	App       string `json:"app"`
	ID        string `json:"id"`
	AutoStart bool   `json:"auto_start"`
	// MaxRun bounds the workload when no "stop" arrives.
	MaxRun time.Duration `json:"max_run"`
	// Pace is the period of the sync, pub/sub+cache and queue loops.
	Pace time.Duration `json:"pace"`
	// FailFirstStart makes the first start attempt fail once its App has
	// received a sync and a pub/sub message (as when the fault injector
	// terminates the node's connections during Start): the node then
	// starts a fresh App, see evRestart.
	FailFirstStart bool `json:"fail_first_start"`
}

// event is one JSON line of a node's report.
type event struct {
	Ev    string `json:"ev"`
	Node  string `json:"node,omitempty"`
	From  string `json:"from,omitempty"`
	Seq   int    `json:"seq,omitempty"`
	Key   string `json:"key,omitempty"`
	Ver   int    `json:"ver,omitempty"`
	Got   int    `json:"got,omitempty"`
	ID    int64  `json:"id,omitempty"`
	Acked bool   `json:"acked,omitempty"`
	Err   string `json:"err,omitempty"`
	N     int64  `json:"n,omitempty"`
	// Inc is the node's incarnation (its start attempt, from 1) on the
	// events of what its App received or ran: a restarted App is a new
	// receiver (see evRestart).
	Inc int `json:"inc,omitempty"`
	// Listener statistics, on evStopped.
	Reconnects int64 `json:"reconnects,omitempty"`
	CaughtUp   int64 `json:"caught_up,omitempty"`
	// Near-cache statistics of the default cache, on evStopped.
	NearHits          uint64 `json:"near_hits,omitempty"`
	NearInvalidations uint64 `json:"near_invalidations,omitempty"`
	NearFlushes       uint64 `json:"near_flushes,omitempty"`
}

// Event names.
const (
	evReady     = "ready"
	evIdle      = "idle"    // workload goroutines ended
	evStopped   = "stopped" // app stopped cleanly; N = cache reads
	evSyncSent  = "sync_sent"
	evSyncErr   = "sync_err" // Publish failed: the message may or may not be committed
	evSyncRecv  = "sync_recv"
	evPSSent    = "ps_sent"
	evPSErr     = "ps_err"
	evPSRecv    = "ps_recv"
	evQPub      = "q_pub"
	evQPubErr   = "q_pub_err"
	evQRun      = "q_run"
	evQLost     = "q_lost" // the run's ctx was cancelled with queue.ErrLivenessLost
	evCtrOK     = "ctr_ok"
	evCtrErr    = "ctr_err"
	evCacheSet  = "cache_set" // Acked false: Set failed, may or may not be committed
	evViolation = "violation" // Key, Ver (expected), Got, Err = kind
	evFinal     = "cache_final"
	evFatal     = "fatal"
	// evRestart: start attempt N failed after its App may have received
	// messages; the node starts a fresh App (incarnation N+1), which is owed
	// only what is committed after its own Start.
	evRestart = "restart"
)

// psPayload is the payload of pub/sub messages: it announces a cache write.
type psPayload struct {
	From  string `json:"from"`
	Seq   int    `json:"seq"`
	Key   string `json:"key"`
	Acked bool   `json:"acked"`
}

type syncPayload struct {
	From string `json:"from"`
	Seq  int    `json:"seq"`
}

type cacheValue struct {
	Ver int `json:"ver"`
}

// emitter writes events to stdout unbuffered, so an event is out before the
// node does its next step (a SIGKILL loses only what was not yet acted upon).
type emitter struct {
	mu  sync.Mutex // serialises writes
	enc *json.Encoder
}

func (e *emitter) emit(ev event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	_ = e.enc.Encode(ev)
}

// TestNodeProcess is a cluster node when envNode is set, and skips otherwise.
func TestNodeProcess(t *testing.T) {
	raw := os.Getenv(envNode)
	if raw == "" {
		t.Skip("only runs as a child process of the cluster tests")
	}
	var cfg nodeConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatalf("bad %s: %v", envNode, err)
	}
	out := &emitter{enc: json.NewEncoder(os.Stdout)}
	if err := runNode(cfg, out, os.Stdin); err != nil {
		out.emit(event{Ev: evFatal, Err: err.Error()})
		t.Fatalf("node %s: %v", cfg.ID, err)
	}
}

// node is one running cluster node.
type node struct {
	cfg nodeConfig
	inc int // start attempt, from 1
	out *emitter
	app *app.App

	reads atomic.Int64

	mu       sync.Mutex // guards notified, keys and heard*
	notified map[string]notice
	keys     []string // cache keys learned from pub/sub, in order of discovery
	// heardSync, heardPS: a sync, a pub/sub message was received; heard
	// closes when both were.
	heardSync, heardPS bool
	heard              chan struct{}
}

// hear records that a message of a stream was received.
func (n *node) hear(sync bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	both := n.heardSync && n.heardPS
	if sync {
		n.heardSync = true
	} else {
		n.heardPS = true
	}
	if !both && n.heardSync && n.heardPS {
		close(n.heard)
	}
}

// notice records that a write of key at Ver was announced to this node.
type notice struct {
	Ver int
	At  time.Time
}

// probe is the node's plugin: it receives sync messages and wires the
// pub/sub and queue subscriptions at Load.
type probe struct {
	app.PluginBase
	n *node
}

func (p *probe) Name() string { return probePlugin }

func (p *probe) Load(ctx context.Context, a *app.App) error {
	n := p.n
	if _, err := a.PubSub().Subscribe(ctx, pubsubChannel, n.onPubSub, nil); err != nil {
		return err
	}
	return a.EventQueue().Subscribe(ctx, queueChannel, queue.Consumer{
		Concurrency: 2,
		Process: func(ctx context.Context, msg queue.Message) error {
			var body struct {
				Key string `json:"key"`
			}
			if err := json.Unmarshal(msg.Payload, &body); err != nil {
				return err
			}
			n.out.emit(event{Ev: evQRun, Key: body.Key, ID: msg.ID, Inc: n.inc})
			// Some work, so that a SIGKILL finds messages running.
			select {
			case <-ctx.Done():
				if errors.Is(context.Cause(ctx), queue.ErrLivenessLost) {
					n.out.emit(event{Ev: evQLost, Key: body.Key, ID: msg.ID, Inc: n.inc})
				}
				return ctx.Err()
			case <-time.After(queueWork):
				return nil
			}
		},
	})
}

func (p *probe) HandleSyncMessage(ctx context.Context, msg listen.Message) error {
	var body syncPayload
	if err := json.Unmarshal(msg.Payload, &body); err != nil {
		return err
	}
	p.n.out.emit(event{Ev: evSyncRecv, From: body.From, Seq: body.Seq, Inc: p.n.inc})
	p.n.hear(true)
	return nil
}

// errInjectedStart fails a first start attempt (nodeConfig.FailFirstStart).
var errInjectedStart = errors.New("injected: the first start attempt fails after its App received messages")

// AfterStart fails the first start attempt when FailFirstStart is set, once
// the App has received a message of each stream.
func (p *probe) AfterStart(ctx context.Context, _ *app.App) error {
	n := p.n
	if !n.cfg.FailFirstStart || n.inc != 1 {
		return nil
	}
	select {
	case <-n.heard:
		return errInjectedStart
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (n *node) onPubSub(ctx context.Context, msg listen.Message) error {
	var body psPayload
	if err := json.Unmarshal(msg.Payload, &body); err != nil {
		return err
	}
	n.out.emit(event{Ev: evPSRecv, From: body.From, Seq: body.Seq, Inc: n.inc})
	n.hear(false)
	n.learn(body.Key)
	n.mu.Lock()
	if body.Acked && body.Seq > n.notified[body.Key].Ver {
		n.notified[body.Key] = notice{Ver: body.Seq, At: time.Now()}
	}
	n.mu.Unlock()
	return nil
}

// learn adds key to the keys this node reads.
func (n *node) learn(key string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.notified[key]; !ok {
		n.keys = append(n.keys, key)
		n.notified[key] = notice{}
	}
}

// startBudget is how long a node keeps starting again after failed starts.
const startBudget = 2 * time.Minute

func runNode(cfg nodeConfig, out *emitter, stdin *os.File) error {
	ctx := context.Background()
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return err
	}
	pcfg.ConnConfig.RuntimeParams["application_name"] = nodeAppName(cfg.ID)
	pcfg.MaxConns = 12
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return err
	}
	defer pool.Close()

	// A fault injected while the node starts (the injector terminating its
	// connections in the middle of Start, PostgreSQL restarting) fails
	// Start, as it should; an orchestrator would then start the process
	// again, backing off, and so does the node, with a fresh App, for up to
	// startBudget. One terminateAll can fail two attempts (the next one may
	// get a pooled connection it killed), FailFirstStart takes one, and a
	// restart of PostgreSQL on a loaded machine fails every attempt until
	// the server is back (TestNodeStartWaitsForTheServer).
	var (
		n *node
		p *probe
		a *app.App
	)
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval = 100*time.Millisecond, 2*time.Second
	began := time.Now()
	for attempt := 1; ; attempt++ {
		n, p, a, err = startNode(ctx, cfg, attempt, out, pool)
		if err == nil {
			break
		}
		if time.Since(began) > startBudget {
			return fmt.Errorf("start (attempt %d, %s): %w", attempt, time.Since(began).Round(time.Second), err)
		}
		fmt.Fprintf(os.Stderr, "node %s: start attempt %d failed, starting again: %v\n", cfg.ID, attempt, err)
		out.emit(event{Ev: evRestart, N: int64(attempt), Err: err.Error()})
		<-time.After(bo.NextBackOff()) // an orchestrator's restart delay, not a wait for a condition
	}
	out.emit(event{Ev: evReady})

	cmds := make(chan string)
	go func() {
		defer close(cmds)
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			cmds <- sc.Text()
		}
	}()

	workCtx, stopWork := context.WithTimeout(ctx, cfg.MaxRun)
	defer stopWork()
	var wg sync.WaitGroup
	started := false
	startWork := func() {
		if started {
			return
		}
		started = true
		for _, loop := range []func(context.Context, *probe){n.syncLoop, n.writeLoop, n.queueLoop, n.counterLoop, n.readLoop} {
			wg.Go(func() { loop(workCtx, p) })
		}
	}
	if cfg.AutoStart {
		startWork()
	}
	idle := make(chan struct{})
	waitIdle := func() {
		stopWork()
		wg.Wait()
		select {
		case <-idle:
		default:
			close(idle)
			out.emit(event{Ev: evIdle})
		}
	}
	for c := range cmds {
		switch c {
		case "go":
			startWork()
		case "stop":
			waitIdle()
		}
	}
	waitIdle()

	// Final reads: every key this node knows, once, as the app serves them.
	fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
	defer fcancel()
	n.mu.Lock()
	keys := slices.Clone(n.keys)
	n.mu.Unlock()
	for _, k := range keys {
		v, ok, err := pgcache.Get[cacheValue](fctx, a.Cache(), k)
		switch {
		case err != nil:
			return fmt.Errorf("final read %s: %w", k, err)
		case ok:
			out.emit(event{Ev: evFinal, Key: k, Ver: v.Ver})
		default:
			out.emit(event{Ev: evFinal, Key: k})
		}
	}
	st, cs := a.PubSub().Stats(), a.Cache().Stats()
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	if err := a.Stop(sctx); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	out.emit(event{Ev: evStopped, N: n.reads.Load(), Reconnects: st.Reconnects, CaughtUp: st.CaughtUp,
		NearHits: cs.NearHits, NearInvalidations: cs.NearInvalidations, NearFlushes: cs.NearFlushes})
	return nil
}

// startNode builds and starts the node's App on pool.
func startNode(ctx context.Context, cfg nodeConfig, inc int, out *emitter, pool *pgxpool.Pool) (*node, *probe, *app.App, error) {
	n := &node{cfg: cfg, inc: inc, out: out, notified: map[string]notice{}, heard: make(chan struct{})}
	p := &probe{n: n}
	a, err := app.New(ctx, app.Config{
		Name:       cfg.App,
		Pool:       pool,
		InstanceID: cfg.ID,
		Plugins:    []app.Plugin{p},
		// Every sync message is distinct; no debounce so each is counted.
		Sync:   &listen.SyncConfig{Debounce: -1},
		PubSub: &listen.Config{PollInterval: 500 * time.Millisecond, ReconnectMaxDelay: time.Second},
		Queue: &queue.Config{
			DefaultTimeout: 5 * time.Second,
			RetryBackoff:   100 * time.Millisecond,
		},
		Lock: &advisorylock.Config{PollInterval: 200 * time.Millisecond, HealthCheckInterval: time.Second},
		DefaultCache: &pgcache.CacheConfig{
			NearCache: true,
		},
	})
	if err != nil {
		return nil, nil, nil, err
	}
	n.app = a
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	err = a.Start(startCtx)
	cancel()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("start: %w", err)
	}
	return n, p, a, nil
}

func nodeAppName(id string) string { return "pgcoord-it-" + id }

// pace runs step every d until ctx ends. Bounded by ctx (the node's MaxRun).
func pace(ctx context.Context, d time.Duration, step func(i int)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for i := 1; ; i++ {
		step(i)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// syncLoop sends numbered sync messages through the plugin.
func (n *node) syncLoop(ctx context.Context, p *probe) {
	pace(ctx, n.cfg.Pace, func(seq int) {
		if err := p.SendSyncMessage(ctx, syncPayload{From: n.cfg.ID, Seq: seq}); err != nil {
			n.out.emit(event{Ev: evSyncErr, Seq: seq, Err: err.Error()})
			return
		}
		n.out.emit(event{Ev: evSyncSent, Seq: seq})
	})
}

// writeLoop writes this node's cache keys with increasing versions (the
// sequence number), checks read-your-writes, and announces each write on
// pub/sub.
func (n *node) writeLoop(ctx context.Context, _ *probe) {
	c := n.app.Cache()
	pace(ctx, n.cfg.Pace, func(seq int) {
		key := fmt.Sprintf("%s-k%d", n.cfg.ID, seq%keysPerWriter)
		n.learn(key)
		err := c.Set(ctx, key, cacheValue{Ver: seq}, 0)
		acked := err == nil
		n.out.emit(event{Ev: evCacheSet, Key: key, Ver: seq, Acked: acked})
		if acked {
			v, ok, gerr := pgcache.Get[cacheValue](ctx, c, key)
			if gerr == nil && (!ok || v.Ver != seq) {
				n.out.emit(event{Ev: evViolation, Err: "read_your_writes", Key: key, Ver: seq, Got: v.Ver})
			}
		}
		if err := n.app.PubSub().Publish(ctx, pubsubChannel, psPayload{From: n.cfg.ID, Seq: seq, Key: key, Acked: acked}, nil); err != nil {
			n.out.emit(event{Ev: evPSErr, Seq: seq, Err: err.Error()})
			return
		}
		n.out.emit(event{Ev: evPSSent, Seq: seq})
	})
}

// readLoop reads the known keys round-robin through the near cache and
// reports a value older than one already seen (monotonic reads) or older than
// an announced write for longer than staleAfter (a lost invalidation).
func (n *node) readLoop(ctx context.Context, _ *probe) {
	c := n.app.Cache()
	seen := map[string]int{}
	reported := map[string]int{}
	pace(ctx, n.cfg.Pace/5, func(i int) {
		n.mu.Lock()
		if len(n.keys) == 0 {
			n.mu.Unlock()
			return
		}
		key := n.keys[i%len(n.keys)]
		before := n.notified[key]
		n.mu.Unlock()
		v, ok, err := pgcache.Get[cacheValue](ctx, c, key)
		if err != nil || !ok {
			return
		}
		n.reads.Add(1)
		if v.Ver < seen[key] {
			n.out.emit(event{Ev: evViolation, Err: "monotonic_reads", Key: key, Ver: seen[key], Got: v.Ver})
		}
		seen[key] = max(seen[key], v.Ver)
		if v.Ver < before.Ver && time.Since(before.At) > staleAfter && reported[key] < before.Ver {
			reported[key] = before.Ver
			n.out.emit(event{Ev: evViolation, Err: "stale_after_invalidation", Key: key, Ver: before.Ver, Got: v.Ver})
		}
	})
}

// queueLoop publishes numbered queue messages.
func (n *node) queueLoop(ctx context.Context, _ *probe) {
	pace(ctx, 2*n.cfg.Pace, func(seq int) {
		key := fmt.Sprintf("%s:%d", n.cfg.ID, seq)
		id, err := n.app.EventQueue().Publish(ctx, queueChannel, map[string]string{"key": key}, nil)
		if err != nil {
			n.out.emit(event{Ev: evQPubErr, Key: key, Err: err.Error()})
			return
		}
		n.out.emit(event{Ev: evQPub, Key: key, ID: id})
	})
}

// counterLoop increments the counter row under RunExclusive + CheckTx with a
// read-modify-write that would lose updates without mutual exclusion, and logs
// each increment's value in the same transaction.
func (n *node) counterLoop(ctx context.Context, _ *probe) {
	pace(ctx, n.cfg.Pace/2, func(seq int) {
		err := n.app.Locks().RunExclusive(ctx, counterLock, 5*time.Second, func(ctx context.Context, l *advisorylock.Lock) error {
			return pgx.BeginFunc(ctx, n.app.DB(), func(tx pgx.Tx) error {
				if err := l.CheckTx(ctx, tx); err != nil {
					return err
				}
				var v int64
				if err := tx.QueryRow(ctx, `SELECT n FROM `+counterTable+` WHERE id = 1`).Scan(&v); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, `UPDATE `+counterTable+` SET n = $1 WHERE id = 1`, v+1); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `INSERT INTO `+counterLog+` (node, seq, value) VALUES ($1, $2, $3)`, n.cfg.ID, seq, v+1)
				return err
			})
		})
		if err != nil {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				n.out.emit(event{Ev: evCtrErr, Seq: seq, Err: err.Error()})
			}
			return
		}
		n.out.emit(event{Ev: evCtrOK, Seq: seq})
	})
}
