package integration_test

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/pgcache"
)

var long = flag.Bool("long", false, "run the cluster tests for minutes instead of seconds")

// clusterOpts describes one cluster run.
type clusterOpts struct {
	// URL is what the nodes connect with (the test DB's, or a role's).
	URL string
	// AdminURL is the server's superuser URL, for the nodes' test harness.
	AdminURL string
	App      string
	Nodes    int
	Run      time.Duration
	Pace     time.Duration
	// Faults runs while the workload runs; it may kill and start nodes.
	Faults func(ctx context.Context, c *cluster)
}

// cluster is the parent's view of the node processes and of everything they
// reported.
type cluster struct {
	t    *testing.T
	opts clusterOpts
	db   *pgtest.DB

	mu    sync.Mutex // guards every field below
	nodes map[string]*nodeProc
	order []string
	seq   int
	m     model
}

// nodeProc is one node process.
type nodeProc struct {
	id     string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *pgtest.Buffer
	late   bool // started after the workload began, or its App restarted
	inc    int  // the incarnation (start attempt) of its App, from 1
	begun  time.Time
	killed bool
	ready  bool
	idle   bool
	exited chan struct{}
	err    error // cmd.Wait's result, set before exited closes
}

// stream is what was sent and received on sync messages or on pub/sub.
type stream struct {
	sent  map[string]map[int]bool           // sender → seq → acked (false: Publish failed)
	recv  map[string]map[string]map[int]int // receiver → sender → seq → deliveries
	first map[string]map[string]int         // receiver → sender → first seq received
}

func newStream() stream {
	return stream{sent: map[string]map[int]bool{}, recv: map[string]map[string]map[int]int{}, first: map[string]map[string]int{}}
}

func (s *stream) addSent(from string, seq int, acked bool) {
	if s.sent[from] == nil {
		s.sent[from] = map[int]bool{}
	}
	s.sent[from][seq] = acked
}

func (s *stream) addRecv(to, from string, seq int) {
	if s.recv[to] == nil {
		s.recv[to] = map[string]map[int]int{}
		s.first[to] = map[string]int{}
	}
	if s.recv[to][from] == nil {
		s.recv[to][from] = map[int]int{}
		s.first[to][from] = seq
	}
	s.recv[to][from][seq]++
	s.first[to][from] = min(s.first[to][from], seq)
}

// retire moves what receiver to received so far to the name as.
func (s *stream) retire(to, as string) {
	if r, ok := s.recv[to]; ok {
		s.recv[as], s.first[as] = r, s.first[to]
		delete(s.recv, to)
		delete(s.first, to)
	}
}

// committed is every message of from known to be committed: acknowledged,
// or received by anyone (a failed Publish may still have committed).
func (s *stream) committed(from string) map[int]bool {
	c := map[int]bool{}
	for seq, acked := range s.sent[from] {
		if acked {
			c[seq] = true
		}
	}
	for _, bySender := range s.recv {
		for seq := range bySender[from] {
			c[seq] = true
		}
	}
	return c
}

// missing lists the committed messages of from that receiver to (started at
// the workload's start unless late) has not received.
func (s *stream) missing(to, from string, late bool) []int {
	got := s.recv[to][from]
	var miss []int
	for seq := range s.committed(from) {
		if late && (got == nil || seq < s.first[to][from]) {
			continue // nothing before this node started
		}
		if got[seq] == 0 {
			miss = append(miss, seq)
		}
	}
	sort.Ints(miss)
	return miss
}

type model struct {
	sync, ps stream
	qPub     map[string]int64    // queue key → id (acknowledged)
	qPubErr  map[string]bool     // queue key whose Publish failed
	qRun     map[string][]string // queue key → nodes that ran it
	qLost    map[string][]string // queue key → nodes whose run was cancelled by a lost liveness session
	ctrOK    map[string][]int    // node → acknowledged counter increments
	ctrErr   int
	sets     map[string]map[int]bool // cache key → version → acked
	finals   map[string]map[string]int
	reads    int64
	// listener reconnections and messages found by catch-up, summed over nodes
	reconnects, caughtUp int64
	// near-cache counters, summed over nodes
	nearHits, nearInvalidations, nearFlushes uint64
	viol                                     []string
	fatal                                    []string
}

// newModel returns an empty model.
func newModel() model {
	return model{
		sync: newStream(), ps: newStream(),
		qPub: map[string]int64{}, qPubErr: map[string]bool{}, qRun: map[string][]string{}, qLost: map[string][]string{},
		ctrOK: map[string][]int{}, sets: map[string]map[int]bool{}, finals: map[string]map[string]int{},
	}
}

// startCluster starts opts.Nodes nodes and waits until each is ready.
func startCluster(t *testing.T, db *pgtest.DB, opts clusterOpts) *cluster {
	t.Helper()
	c := &cluster{t: t, opts: opts, db: db, nodes: map[string]*nodeProc{}}
	c.m = newModel()
	t.Cleanup(c.keepLogs) // runs after killAll: the logs are complete
	t.Cleanup(c.killAll)
	for range opts.Nodes {
		c.startNode(false)
	}
	c.waitReady()
	return c
}

// startNode starts one node process; a late node starts its workload at once.
func (c *cluster) startNode(late bool) string {
	t := c.t
	c.mu.Lock()
	c.seq++
	id := fmt.Sprintf("n%d", c.seq)
	c.mu.Unlock()
	raw, err := json.Marshal(nodeConfig{
		URL: c.opts.URL, App: c.opts.App, ID: id, AutoStart: late,
		MaxRun: c.opts.Run + time.Minute, Pace: c.opts.Pace,
		// A late node's first App fails to start after receiving messages,
		// so every run covers a restarted node (the injector causes one at
		// random when it terminates connections during a Start).
		FailFirstStart: late,
	})
	require.NoError(t, err)
	cmd := exec.Command(os.Args[0], "-test.run=^TestNodeProcess$", "-test.count=1", "-test.timeout=10m")
	cmd.Env = append(os.Environ(), envNode+"="+string(raw), pgtest.EnvDatabaseURL+"="+c.opts.AdminURL)
	p := &nodeProc{id: id, cmd: cmd, stderr: &pgtest.Buffer{}, late: late, inc: 1, begun: time.Now(), exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	p.stdin, err = cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	c.mu.Lock()
	c.nodes[id] = p
	c.order = append(c.order, id)
	c.mu.Unlock()
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if len(line) == 0 || line[0] != '{' {
				continue // go test's own output (PASS, ok)
			}
			var ev event
			if json.Unmarshal(line, &ev) == nil {
				c.record(id, ev)
			}
		}
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return id
}

// record applies one event of node id to the model.
func (c *cluster) record(id string, ev event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := &c.m
	switch ev.Ev {
	case evReady:
		p := c.nodes[id]
		p.ready = true
		if p.late {
			c.t.Logf("late node %s ready %s after its process started", id, time.Since(p.begun).Round(time.Millisecond))
		}
	case evIdle:
		c.nodes[id].idle = true
	case evStopped:
		m.reads += ev.N
		m.reconnects += ev.Reconnects
		m.caughtUp += ev.CaughtUp
		m.nearHits += ev.NearHits
		m.nearInvalidations += ev.NearInvalidations
		m.nearFlushes += ev.NearFlushes
	case evRestart:
		// The failed attempt's App received as a receiver of its own (as a
		// killed node): the fresh App is owed only what follows its Start.
		p := c.nodes[id]
		old := incarnation(id, int(ev.N))
		m.sync.retire(id, old)
		m.ps.retire(id, old)
		for _, byKey := range []map[string][]string{m.qRun, m.qLost} {
			for _, runners := range byKey {
				for i, r := range runners {
					if r == id {
						runners[i] = old
					}
				}
			}
		}
		p.inc, p.late = int(ev.N)+1, true
		c.t.Logf("node %s: start attempt %d failed (%s); its fresh App counts as a late node", id, ev.N, ev.Err)
	case evSyncSent, evSyncErr:
		m.sync.addSent(id, ev.Seq, ev.Ev == evSyncSent)
	case evSyncRecv:
		m.sync.addRecv(c.receiver(id, ev.Inc), ev.From, ev.Seq)
	case evPSSent, evPSErr:
		m.ps.addSent(id, ev.Seq, ev.Ev == evPSSent)
	case evPSRecv:
		m.ps.addRecv(c.receiver(id, ev.Inc), ev.From, ev.Seq)
	case evQPub:
		m.qPub[ev.Key] = ev.ID
	case evQPubErr:
		m.qPubErr[ev.Key] = true
	case evQRun:
		m.qRun[ev.Key] = append(m.qRun[ev.Key], c.receiver(id, ev.Inc))
	case evQLost:
		m.qLost[ev.Key] = append(m.qLost[ev.Key], c.receiver(id, ev.Inc))
	case evCtrOK:
		m.ctrOK[id] = append(m.ctrOK[id], ev.Seq)
	case evCtrErr:
		m.ctrErr++
	case evCacheSet:
		if m.sets[ev.Key] == nil {
			m.sets[ev.Key] = map[int]bool{}
		}
		m.sets[ev.Key][ev.Ver] = ev.Acked
	case evFinal:
		if m.finals[id] == nil {
			m.finals[id] = map[string]int{}
		}
		m.finals[id][ev.Key] = ev.Ver
	case evViolation:
		m.viol = append(m.viol, fmt.Sprintf("%s: %s key=%s want>=%d got=%d", id, ev.Err, ev.Key, ev.Ver, ev.Got))
	case evFatal:
		m.fatal = append(m.fatal, id+": "+ev.Err)
		c.t.Logf("node %s failed: %s", id, ev.Err)
	}
}

// incarnation names a node's App of start attempt inc that failed to start.
func incarnation(id string, inc int) string { return fmt.Sprintf("%s#%d", id, inc) }

// receiver is who received an event of node id's incarnation inc; caller
// holds mu.
func (c *cluster) receiver(id string, inc int) string {
	if inc != 0 && inc < c.nodes[id].inc {
		return incarnation(id, inc)
	}
	return id
}

// gone reports whether a receiver no longer runs: a killed node, or the App
// of a failed start attempt; caller holds mu.
func (c *cluster) gone(receiver string) bool {
	p, ok := c.nodes[receiver]
	return !ok || p.killed
}

// keepLogs, when the test failed, writes every node's log (its stderr: the
// app's slog output) to a directory that outlives the test, and logs the
// directory and each log's tail.
func (c *cluster) keepLogs() {
	if !c.t.Failed() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	dir, err := os.MkdirTemp("", "pgcoord-it-logs-")
	if err != nil {
		c.t.Logf("keep node logs: %v", err)
		dir = ""
	}
	for _, id := range c.order {
		log := c.nodes[id].stderr.String()
		if dir != "" {
			if err := os.WriteFile(filepath.Join(dir, id+".log"), []byte(log), 0o644); err != nil {
				c.t.Logf("keep node logs: %v", err)
			}
		}
		c.t.Logf("node %s log (tail):\n%s", id, tail(log))
	}
	if dir != "" {
		c.t.Logf("node logs kept in %s", dir)
	}
}

func (c *cluster) send(id, cmd string) {
	c.mu.Lock()
	p := c.nodes[id]
	c.mu.Unlock()
	_, _ = io.WriteString(p.stdin, cmd+"\n")
}

// live lists the nodes that were not killed, in start order.
func (c *cluster) live() []*nodeProc {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ps []*nodeProc
	for _, id := range c.order {
		if p := c.nodes[id]; !p.killed {
			ps = append(ps, p)
		}
	}
	return ps
}

// waitFor polls cond (under the model's lock) until it holds or d passes.
func (c *cluster) waitFor(d time.Duration, what string, cond func() bool) bool {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		c.mu.Lock()
		ok := cond()
		c.mu.Unlock()
		if ok {
			return true
		}
		if time.Now().After(deadline) {
			c.t.Logf("gave up waiting for %s after %s", what, d)
			return false
		}
		<-tick.C
	}
}

func (c *cluster) waitReady() {
	ok := c.waitFor(2*time.Minute, "nodes ready", func() bool {
		for _, p := range c.nodes {
			if !p.killed && !p.ready {
				select {
				case <-p.exited:
					return true // fails below
				default:
				}
				return false
			}
		}
		return true
	})
	for _, p := range c.live() {
		require.Truef(c.t, ok && p.ready, "node %s not ready: %v\n%s", p.id, p.err, p.stderr.String())
	}
}

// kill SIGKILLs node id.
func (c *cluster) kill(id string) {
	c.mu.Lock()
	p := c.nodes[id]
	p.killed = true
	c.mu.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// killAll is the cleanup: SIGKILL whatever still runs.
func (c *cluster) killAll() {
	c.mu.Lock()
	ps := make([]*nodeProc, 0, len(c.nodes))
	for _, p := range c.nodes {
		ps = append(ps, p)
	}
	c.mu.Unlock()
	for _, p := range ps {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.exited
		}
	}
}

// terminateAll terminates every backend of every live node (pool, listener,
// lock liveness session, River). The injector's own connection may time out
// on a loaded machine or while the server restarts: it retries, on a context
// of its own, for up to a minute, so that the run fails only when an
// invariant breaks, never because the injector could not inject.
func (c *cluster) terminateAll() int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	total := 0
	for _, p := range c.live() {
		n, err := backoff.Retry(ctx, func() (int, error) {
			actx, acancel := context.WithTimeout(ctx, 15*time.Second)
			defer acancel()
			// The node's pool, then its dedicated connections (named by instance id).
			n, err := c.db.TerminateBackends(actx, nodeAppName(p.id))
			if err != nil {
				return n, err
			}
			m, err := c.db.TerminateBackends(actx, p.id)
			return n + m, err
		}, backoff.WithBackOff(backoff.NewExponentialBackOff()), backoff.WithMaxElapsedTime(time.Minute))
		if err != nil {
			c.t.Errorf("terminate backends of %s (retried for a minute): %v", p.id, err) // not FailNow: runs off the test goroutine
		}
		total += n
	}
	return total
}

// run drives a whole cluster run: workload, faults, drain, shutdown, checks.
func runCluster(t *testing.T, db *pgtest.DB, opts clusterOpts) *cluster {
	t.Helper()
	ctx := context.Background()
	if opts.App == "" {
		opts.App = "itapp"
	}
	if opts.Pace == 0 {
		opts.Pace = 25 * time.Millisecond
	}
	setupCounter(t, db)
	c := startCluster(t, db, opts)
	for _, p := range c.live() {
		c.send(p.id, "go")
	}
	began := time.Now()
	runCtx, cancel := context.WithTimeout(ctx, opts.Run)
	defer cancel()
	faultsDone := make(chan struct{})
	go func() {
		defer close(faultsDone)
		if opts.Faults != nil {
			opts.Faults(runCtx, c)
		}
	}()
	<-runCtx.Done()
	<-faultsDone
	for _, p := range c.live() {
		c.send(p.id, "stop")
	}
	c.waitFor(time.Minute, "workload idle", func() bool {
		for _, p := range c.nodes {
			if !p.killed && !p.idle {
				return false
			}
		}
		return true
	})
	// Drain: every live node has every committed message, every committed
	// queue message ran. Bounded: the checks below report what is missing.
	// A message that ran on a killed node stays running in river_job until
	// River's rescuer (every 30 s on the leader) hands it to a live node, so
	// the queue is drained when nothing in river_job is left unfinished.
	check := adminPool(t, db)
	jobs := pgx.Identifier{db.Schema, "river_job"}.Sanitize()
	c.waitFor(90*time.Second, "delivery and queue drain", func() bool {
		if len(c.undelivered()) > 0 || len(c.unrun()) > 0 {
			return false
		}
		var unfinished int
		err := check.QueryRow(ctx, `SELECT count(*) FROM `+jobs+` WHERE state <> 'completed'`).Scan(&unfinished)
		return err == nil && unfinished == 0
	})
	for _, p := range c.live() {
		_ = p.stdin.Close()
	}
	for _, p := range c.live() {
		select {
		case <-p.exited:
		case <-time.After(time.Minute):
			t.Errorf("node %s did not exit", p.id)
		}
		require.NoErrorf(t, p.err, "node %s exited badly:\n%s", p.id, tail(p.stderr.String()))
		// A missing privilege shows up as a logged background error.
		require.NotContainsf(t, p.stderr.String(), "SQLSTATE 42501", "node %s hit a permission error:\n%s", p.id, tail(p.stderr.String()))
	}
	t.Logf("run (workload %s, then drain and shutdown) took %s", opts.Run, time.Since(began).Round(time.Millisecond))
	c.check(ctx)
	return c
}

func tail(s string) string {
	if len(s) > 8000 {
		return "…" + s[len(s)-8000:]
	}
	return s
}

func setupCounter(t *testing.T, db *pgtest.DB) {
	t.Helper()
	_, err := db.Pool.Exec(context.Background(), `
		CREATE TABLE IF NOT EXISTS `+counterTable+` (id int PRIMARY KEY, n bigint NOT NULL);
		INSERT INTO `+counterTable+` VALUES (1, 0) ON CONFLICT DO NOTHING;
		CREATE TABLE IF NOT EXISTS `+counterLog+` (node text NOT NULL, seq int NOT NULL, value bigint NOT NULL)`)
	require.NoError(t, err)
}

// undelivered lists (receiver, sender, seqs) still missing; caller holds mu.
func (c *cluster) undelivered() []string {
	var out []string
	for _, st := range []*stream{&c.m.sync, &c.m.ps} {
		for _, to := range c.order {
			p := c.nodes[to]
			if p.killed {
				continue
			}
			for from := range st.sent {
				if from == to {
					continue
				}
				if miss := st.missing(to, from, p.late); len(miss) > 0 {
					out = append(out, fmt.Sprintf("%s misses %d of %s's (first %v)", to, len(miss), from, miss[:min(5, len(miss))]))
				}
			}
		}
	}
	return out
}

// unrun lists committed queue messages that never ran; caller holds mu.
func (c *cluster) unrun() []string {
	var out []string
	for key := range c.m.qPub {
		if len(c.m.qRun[key]) == 0 {
			out = append(out, key)
		}
	}
	sort.Strings(out)
	return out
}

// queueReruns counts the queue messages that ran more than once and lists
// the runs no fault explains: a message runs once, or again (on one live
// node at most) after a node that ran it was killed or cancelled it because
// its liveness session stayed lost past queue.CancelAfterLoss (a slow
// reconnect after a cut: the message goes back to the queue uncharged, as
// the queue package documents); caller holds mu.
func (c *cluster) queueReruns() (reruns int, violations []string) {
	keys := make([]string, 0, len(c.m.qRun))
	for k := range c.m.qRun {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		runners := c.m.qRun[k]
		if len(runners) == 1 {
			continue
		}
		lost := slices.Clone(c.m.qLost[k])
		var onLive []string // runs on live nodes that no lost session ended
		for _, r := range runners {
			if i := slices.Index(lost, r); i >= 0 {
				lost = slices.Delete(lost, i, i+1)
				continue
			}
			if !c.gone(r) {
				onLive = append(onLive, r)
			}
		}
		switch {
		case len(onLive) == len(runners):
			violations = append(violations, fmt.Sprintf("queue: %s ran %d times (%v) on live nodes, none cancelled by a lost liveness session", k, len(runners), runners))
		case len(onLive) > 1:
			violations = append(violations, fmt.Sprintf("queue: %s ran on several live nodes: %v", k, runners))
		}
		reruns++
	}
	return reruns, violations
}

// check asserts every invariant of the run.
func (c *cluster) check(ctx context.Context) {
	t := c.t
	pool := adminPool(t, c.db)
	c.mu.Lock()
	defer c.mu.Unlock()
	m := &c.m
	require.Empty(t, m.fatal, "node failures")
	require.Empty(t, m.viol, "cache violations (read-your-writes, monotonic reads, stale after invalidation)")

	// Sync messages and pub/sub: exactly once to every other live node, never
	// to the sender, nothing missing (late nodes: from their first message on).
	for name, st := range map[string]*stream{"sync": &m.sync, "pubsub": &m.ps} {
		sent, acked, delivered := 0, 0, 0
		for from, seqs := range st.sent {
			sent += len(seqs)
			for _, a := range seqs {
				if a {
					acked++
				}
			}
			require.NotEmptyf(t, st.committed(from), "%s: %s sent nothing", name, from)
		}
		for to, bySender := range st.recv {
			require.NotContainsf(t, bySender, to, "%s: %s received its own messages", name, to)
			for from, seqs := range bySender {
				committed := st.committed(from)
				for seq, n := range seqs {
					delivered += n
					require.Equalf(t, 1, n, "%s: %s got %s's #%d %d times", name, to, from, seq, n)
					require.Truef(t, committed[seq], "%s: %s got %s's #%d, never committed", name, to, from, seq)
				}
			}
		}
		require.Emptyf(t, c.undelivered(), "%s: undelivered messages", name)
		for _, to := range c.nodes {
			for _, from := range c.nodes {
				if to.late && !to.killed && !from.killed && to != from {
					require.NotEmptyf(t, st.recv[to.id][from.id], "%s: late node %s got nothing from %s", name, to.id, from.id)
				}
			}
		}
		t.Logf("%s: %d sent (%d acknowledged), %d deliveries, each exactly once", name, sent, acked, delivered)
	}

	// Queue: every committed message ran; exactly once unless a node that ran
	// it was killed (then once more on a live node at most).
	committed := map[string]bool{}
	for k := range m.qPub {
		committed[k] = true
	}
	for k := range m.qRun {
		publisher, _, _ := strings.Cut(k, ":")
		require.Truef(t, committed[k] || m.qPubErr[k] || c.gone(publisher), "queue: %s ran but was never published", k)
		committed[k] = true
	}
	require.Empty(t, c.unrun(), "queue: acknowledged messages that never ran")
	reruns, violations := c.queueReruns()
	require.Empty(t, violations, "queue")
	states := map[string]int{}
	rows, err := pool.Query(ctx, `SELECT state::text, count(*) FROM `+pgx.Identifier{c.db.Schema, "river_job"}.Sanitize()+` GROUP BY 1`)
	require.NoError(t, err)
	for rows.Next() {
		var s string
		var n int
		require.NoError(t, rows.Scan(&s, &n))
		states[s] = n
	}
	require.NoError(t, rows.Err())
	require.Equal(t, map[string]int{"completed": len(committed)}, states, "queue: every committed message completed, nothing else in river_job")
	t.Logf("queue: %d published (%d failed publishes), %d completed, %d re-run after their worker was killed or lost its liveness session", len(m.qPub), len(m.qPubErr), len(committed), reruns)

	// Counter: exact. Values written are exactly 1..n, once each; every
	// acknowledged increment is among them.
	var n, logged, distinct, maxv int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT n FROM `+counterTable+` WHERE id = 1`).Scan(&n))
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT value), coalesce(max(value), 0) FROM `+counterLog).Scan(&logged, &distinct, &maxv))
	require.Equal(t, n, logged, "counter: one increment per logged transaction")
	require.Equal(t, n, distinct, "counter: no two increments wrote the same value (no lost update)")
	require.Equal(t, n, maxv, "counter: values are 1..n")
	ackedInc := 0
	for node, seqs := range m.ctrOK {
		ackedInc += len(seqs)
		var got []int
		rows, err := pool.Query(ctx, `SELECT seq FROM `+counterLog+` WHERE node = $1`, node)
		require.NoError(t, err)
		got, err = pgx.CollectRows(rows, pgx.RowTo[int])
		require.NoError(t, err)
		for _, s := range seqs {
			require.Truef(t, slices.Contains(got, s), "counter: %s's acknowledged increment #%d is not in the log", node, s)
		}
	}
	require.LessOrEqual(t, int64(ackedInc), n)
	require.Positive(t, n)
	t.Logf("counter: %d increments (%d acknowledged, %d failed attempts), exact", n, ackedInc, m.ctrErr)

	// Cache: after quiescence every live node reads, for every key it knows,
	// the value in PostgreSQL, which is the last committed write.
	mgr, err := pgcache.NewManager(pool, &pgcache.ManagerConfig{AppName: c.opts.App, Schema: c.db.Schema})
	require.NoError(t, err)
	defer mgr.Close(context.WithoutCancel(ctx))
	cache, err := mgr.CreateCache(ctx, pgcache.CacheConfig{Name: c.opts.App})
	require.NoError(t, err)
	finals := 0
	for _, p := range c.nodes {
		if p.killed {
			continue
		}
		require.NotEmptyf(t, m.finals[p.id], "cache: %s read no key at the end", p.id)
		for key, ver := range m.finals[p.id] {
			want, _, err := pgcache.Get[cacheValue](ctx, cache, key)
			require.NoError(t, err)
			require.Equalf(t, want.Ver, ver, "cache: %s reads %s at version %d, PostgreSQL has %d", p.id, key, ver, want.Ver)
			finals++
		}
	}
	for key, vers := range m.sets {
		last := 0
		for v, acked := range vers {
			if acked {
				last = max(last, v)
			}
		}
		got, ok, err := pgcache.Get[cacheValue](ctx, cache, key)
		require.NoError(t, err)
		require.GreaterOrEqualf(t, got.Ver, last, "cache: %s lost acknowledged version %d", key, last)
		if ok {
			// A killed writer's last Set may have committed unreported.
			writer, _, _ := strings.Cut(key, "-k")
			_, known := vers[got.Ver]
			inFlight := c.nodes[writer].killed && got.Ver > maxVersion(vers)
			require.Truef(t, known || inFlight, "cache: %s holds version %d that was never written", key, got.Ver)
		}
	}
	t.Logf("listen: %d listener reconnections, %d messages recovered by catch-up (summed over nodes that stopped cleanly)", m.reconnects, m.caughtUp)
	require.Positive(t, m.nearHits, "the near cache served reads (the cache checks are not vacuous)")
	require.Positive(t, m.nearInvalidations, "near caches were invalidated by other nodes' writes")
	t.Logf("near cache: %d hits, %d invalidations, %d flushes (summed over nodes that stopped cleanly)", m.nearHits, m.nearInvalidations, m.nearFlushes)
	t.Logf("cache: %d writes on %d keys, %d near-cache reads checked (monotonic, read-your-writes, fresh within %s of an announced write), %d final reads equal PostgreSQL",
		countSets(m.sets), len(m.sets), m.reads, staleAfter, finals)
}

func maxVersion(vers map[int]bool) int {
	m := 0
	for v := range vers {
		m = max(m, v)
	}
	return m
}

func countSets(s map[string]map[int]bool) int {
	n := 0
	for _, v := range s {
		n += len(v)
	}
	return n
}

// adminPool opens a pool on db as the superuser with a fresh connection (the
// test's pool may have lost its connections to a restart).
func adminPool(t *testing.T, db *pgtest.DB) *pgxpool.Pool {
	t.Helper()
	return db.NewPool(t, &pgtest.PoolOptions{AppName: "it-admin"})
}

func runDuration(short time.Duration) time.Duration {
	if *long {
		return 3 * time.Minute
	}
	return short
}
