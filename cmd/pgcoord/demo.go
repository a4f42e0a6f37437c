package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/internal/dbflag"
	"github.com/pgcoord/pgcoord/internal/demo/asynctasks"
	"github.com/pgcoord/pgcoord/internal/demo/authcache"
	"github.com/pgcoord/pgcoord/internal/demo/fielddestroy"
	"github.com/pgcoord/pgcoord/internal/demo/schemasync"
	"github.com/pgcoord/pgcoord/migrations"
)

// demoNodes is how many instances the demo runs.
const demoNodes = 3

// demoTimeout bounds the whole demo.
const demoTimeout = 90 * time.Second

const demoUsage = `Usage: pgcoord demo [flags]

Starts three instances of one app as separate processes on one database and
acts out the four scenarios of NocoBase's cluster plugin guide with the
scenario plugins of internal/demo/: a token policy cached in PostgreSQL
(authcache), a schema change announced by a transactional sync message
(schemasync), async tasks spread over the instances and one cancelled from
another instance (asynctasks), and field removals serialized by a cluster
lock (fielddestroy). It prints which instance did what and a summary table.

Without --database-url or PGCOORD_DATABASE_URL it starts a throwaway local
PostgreSQL and removes it at exit. With a database it migrates it, works in a
schema of its own (dropped at exit) and an app name of its own.

Flags:
`

// cmdDemo migrates, starts three node processes and acts out the cluster
// guide's four scenarios, narrating what each instance does, then prints a
// summary table.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, flags := newCommand("demo", demoUsage, stderr)
	dash := fs.String("dashboard", "", "also serve the cluster dashboard on this address (e.g. 127.0.0.1:8080) while the demo runs, and keep it open afterwards until interrupted")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	outer := ctx
	ctx, cancel := context.WithTimeout(ctx, demoTimeout)
	defer cancel()

	db, err := flags.Open(ctx, true, stderr)
	if err != nil {
		return err
	}
	defer func() {
		if err := db.Close(ctx); err != nil {
			fmt.Fprintln(stderr, "pgcoord:", err)
		}
	}()

	d := &demo{out: stdout, errOut: stderr, pool: db.Pool, db: *flags, events: newEventLog()}
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	d.appName = "demo-" + hex.EncodeToString(suffix[:])
	d.demoSchema = "pgcoord_demo_" + hex.EncodeToString(suffix[:])
	if *dash == "" {
		return d.run(ctx)
	}
	stop, err := startDashboard(outer, db.Pool, flags.Schema, *dash, stdout, stderr)
	if err != nil {
		return err
	}
	defer stop()
	if err := d.run(ctx); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "pgcoord demo: done; the dashboard stays open until Ctrl-C")
	<-outer.Done()
	return nil
}

type demo struct {
	out, errOut io.Writer
	outMu       sync.Mutex // guards out and errOut
	pool        *pgxpool.Pool
	db          dbflag.Flags
	appName     string
	demoSchema  string
	nodes       []*nodeProc
	events      *eventLog
}

func (d *demo) printf(format string, args ...any) {
	d.outMu.Lock()
	defer d.outMu.Unlock()
	fmt.Fprintf(d.out, format, args...)
}

func (d *demo) section(title string) {
	d.printf("\n== %s ==\n", title)
}

func (d *demo) run(ctx context.Context) (err error) {
	start := time.Now()
	logger := warnLogger(d.errOut)
	if _, err := migrations.Up(ctx, d.pool, &migrations.Options{Schema: d.db.Schema, Logger: logger}); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	d.printf("pgcoord demo: schema %q migrated; app %q, example tables in schema %q\n", d.db.Schema, d.appName, d.demoSchema)
	// The tables exist before the nodes start (their Load would create them too).
	for _, ensure := range []func(context.Context, *pgxpool.Pool, string) error{
		authcache.EnsureSchema, schemasync.EnsureSchema, asynctasks.EnsureSchema, fielddestroy.EnsureSchema,
	} {
		if err := ensure(ctx, d.pool, d.demoSchema); err != nil {
			return fmt.Errorf("create the example tables: %w", err)
		}
	}
	defer func() {
		cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
		defer cancel()
		err = errors.Join(err, d.stopNodes(cleanup), d.dropDemoData(cleanup))
		if err == nil {
			d.printf("\ndone in %s: nodes stopped, demo schema and data removed\n", time.Since(start).Round(100*time.Millisecond))
		}
	}()

	if err := d.startNodes(ctx); err != nil {
		return err
	}
	var sum summary
	steps := []func(context.Context, *summary) error{d.scenarioCache, d.scenarioSchemaSync, d.scenarioTasks, d.scenarioFields}
	for _, step := range steps {
		if err := step(ctx, &sum); err != nil {
			return err
		}
	}
	return d.printSummary(ctx, &sum)
}

// summary collects what the scenarios observed for the final table.
type summary struct {
	syncExpected   int
	cancelledTask  int64
	cancelRunner   string
	cancelAsker    string
	cancelStatus   string
	tasksSucceeded int
	fieldVersion   int64
	fieldRemovals  int
}

// --- the four scenarios -----------------------------------------------------

func (d *demo) scenarioCache(ctx context.Context, sum *summary) error {
	d.section("1. authcache: a token policy cached in PostgreSQL, shared by every instance")
	if _, err := d.call(ctx, 0, nodeCmd{Cmd: "auth-update", Expiry: "24h"}); err != nil {
		return err
	}
	d.printf("-- all three instances read the policy at once: one of them runs the loader\n")
	if err := d.callAll(ctx, nodeCmd{Cmd: "auth-read"}); err != nil {
		return err
	}
	d.printf("-- and again: every read is a cache hit\n")
	if err := d.callAll(ctx, nodeCmd{Cmd: "auth-read"}); err != nil {
		return err
	}
	d.printf("-- node-2 changes the policy; the next reads see the new value\n")
	if _, err := d.call(ctx, 1, nodeCmd{Cmd: "auth-update", Expiry: "2h"}); err != nil {
		return err
	}
	return d.callAll(ctx, nodeCmd{Cmd: "auth-read"})
}

func (d *demo) scenarioSchemaSync(ctx context.Context, sum *summary) error {
	d.section("2. schemasync: a schema change announced in its own transaction")
	mark := d.events.mark()
	if _, err := d.call(ctx, 0, nodeCmd{Cmd: "collection-save", Collection: "drafts", Fields: []string{"id"}, Rollback: true}); err != nil {
		return err
	}
	if _, err := d.call(ctx, 0, nodeCmd{Cmd: "collection-save", Collection: "posts", Fields: []string{"id", "title", "body"}}); err != nil {
		return err
	}
	if err := d.events.wait(ctx, mark, "the other instances reload posts", func(evs []event) bool {
		return countEvents(evs, func(e event) bool { return e.Kind == "reload" && e.Collection == "posts" }) >= demoNodes-1
	}); err != nil {
		return err
	}
	sum.syncExpected += demoNodes - 1
	res, err := d.call(ctx, 2, nodeCmd{Cmd: "collections"})
	if err != nil {
		return err
	}
	if slices.Contains(res.Names, "drafts") {
		return errors.New("the rolled-back collection reached another instance")
	}
	if slices.Contains(res.Names, "posts") {
		d.printf("-- the rolled-back \"drafts\" reached no instance; the committed \"posts\" reached all\n")
	}
	return nil
}

func (d *demo) scenarioTasks(ctx context.Context, sum *summary) error {
	d.section("3. asynctasks: tasks through the event queue, 2 at a time per instance; a cancel across instances")
	mark := d.events.mark()
	const short = 6
	res, err := d.call(ctx, 0, nodeCmd{Cmd: "task-create", Type: demoShortTask, Count: short})
	if err != nil {
		return err
	}
	if err := d.events.wait(ctx, mark, "the tasks finish", func(evs []event) bool {
		return countEvents(evs, func(e event) bool { return e.Kind == "task-succeeded" && slices.Contains(res.IDs, e.Task) }) >= len(res.IDs)
	}); err != nil {
		return err
	}
	sum.tasksSucceeded = len(res.IDs)

	mark = d.events.mark()
	res, err = d.call(ctx, 0, nodeCmd{Cmd: "task-create", Type: demoLongTask})
	if err != nil {
		return err
	}
	long := res.IDs[0]
	var runner int
	if err := d.events.wait(ctx, mark, fmt.Sprintf("task %d starts", long), func(evs []event) bool {
		for _, e := range evs {
			if e.Kind == "task-started" && e.Task == long {
				runner = e.node
				return true
			}
		}
		return false
	}); err != nil {
		return err
	}
	asker := (runner + 1) % demoNodes
	d.printf("-- task %d runs on %s; %s cancels it\n", long, nodeName(runner), nodeName(asker))
	mark = d.events.mark()
	if _, err := d.call(ctx, asker, nodeCmd{Cmd: "task-cancel", Task: long}); err != nil {
		return err
	}
	if err := d.events.wait(ctx, mark, fmt.Sprintf("task %d is cancelled", long), func(evs []event) bool {
		return countEvents(evs, func(e event) bool { return e.Kind == "task-cancelled" && e.Task == long }) > 0
	}); err != nil {
		return err
	}
	sum.cancelledTask, sum.cancelRunner, sum.cancelAsker = long, nodeName(runner), nodeName(asker)
	tasks := pgx.Identifier{d.demoSchema, "tasks"}.Sanitize()
	return d.pool.QueryRow(ctx, `SELECT status FROM `+tasks+` WHERE id = $1`, long).Scan(&sum.cancelStatus)
}

func (d *demo) scenarioFields(ctx context.Context, sum *summary) error {
	d.section("4. fielddestroy: field removals serialized by a cluster lock, announced by sync messages")
	fields := []string{"title", "body", "author", "tags", "cover", "summary"}
	mark := d.events.mark()
	if _, err := d.call(ctx, 0, nodeCmd{Cmd: "fields-add", Collection: "posts", Fields: fields}); err != nil {
		return err
	}
	if err := d.events.wait(ctx, mark, "the others load the fields", func(evs []event) bool {
		return countEvents(evs, func(e event) bool { return e.Kind == fielddestroy.TypeAddFields }) >= demoNodes-1
	}); err != nil {
		return err
	}
	sum.syncExpected += demoNodes - 1
	d.printf("-- every instance removes two fields of posts at the same time\n")
	mark = d.events.mark()
	var cmds []pendingCall
	for i, f := range fields {
		cmds = append(cmds, d.start(i%demoNodes, nodeCmd{Cmd: "field-remove", Collection: "posts", Field: f}))
	}
	for _, c := range cmds {
		if _, err := c.wait(ctx); err != nil {
			return err
		}
	}
	want := len(fields) * (demoNodes - 1)
	if err := d.events.wait(ctx, mark, "every removal reaches the other instances", func(evs []event) bool {
		return countEvents(evs, func(e event) bool { return e.Kind == fielddestroy.TypeRemoveField }) >= want
	}); err != nil {
		return err
	}
	sum.syncExpected += want
	sum.fieldRemovals = len(fields)
	versions := pgx.Identifier{d.demoSchema, "collection_versions"}.Sanitize()
	if err := d.pool.QueryRow(ctx, `SELECT version FROM `+versions+` WHERE collection_name = 'posts'`).Scan(&sum.fieldVersion); err != nil {
		return err
	}
	d.printf("-- schema version of posts: %d after %d removals (a read-modify-write inside the lock: none overlapped)\n", sum.fieldVersion, len(fields))
	return nil
}

func (d *demo) printSummary(ctx context.Context, sum *summary) error {
	d.section("Summary")
	var total nodeStats
	rows := make([]nodeStats, demoNodes)
	for i := range d.nodes {
		res, err := d.call(ctx, i, nodeCmd{Cmd: "stats"})
		if err != nil {
			return err
		}
		if res.Stats == nil {
			return fmt.Errorf("%s sent no stats", nodeName(i))
		}
		rows[i] = *res.Stats
		total.CacheHits += rows[i].CacheHits
		total.CacheMisses += rows[i].CacheMisses
		total.LoaderRuns += rows[i].LoaderRuns
		total.SyncMessages += rows[i].SyncMessages
		total.TasksRun += rows[i].TasksRun
		total.Cancelled += rows[i].Cancelled
		total.LockWaits += rows[i].LockWaits
	}
	d.outMu.Lock()
	tw := tabwriter.NewWriter(d.out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "instance\tcache hits\tcache misses\tloader runs\tsync messages delivered\ttasks run\ttasks cancelled\tlock waits\t")
	line := func(name string, s nodeStats) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", name, s.CacheHits, s.CacheMisses, s.LoaderRuns, s.SyncMessages, s.TasksRun, s.Cancelled, s.LockWaits)
	}
	for i, s := range rows {
		line(nodeName(i), s)
	}
	line("total", total)
	_ = tw.Flush()
	d.outMu.Unlock()

	d.printf("\nauthcache:    the policy was loaded %d time(s) for %d reads (once per version, shared through PostgreSQL)\n",
		total.LoaderRuns, 3*demoNodes)
	d.printf("schemasync:   %d sync messages delivered in all (expected %d); the rolled-back change was never sent\n",
		total.SyncMessages, sum.syncExpected)
	d.printf("asynctasks:   %d short tasks succeeded, spread as shown under \"tasks run\"\n", sum.tasksSucceeded)
	d.printf("cancelled task: %d, ran on %s, cancelled by %s, final status %s\n",
		sum.cancelledTask, sum.cancelRunner, sum.cancelAsker, sum.cancelStatus)
	d.printf("fielddestroy: %d removals, schema version %d, %d lock waits\n", sum.fieldRemovals, sum.fieldVersion, total.LockWaits)

	var problems []string
	if total.LoaderRuns != 2 {
		problems = append(problems, fmt.Sprintf("the token policy was loaded %d times, want 2", total.LoaderRuns))
	}
	if total.SyncMessages != int64(sum.syncExpected) {
		problems = append(problems, fmt.Sprintf("%d sync messages delivered, want %d", total.SyncMessages, sum.syncExpected))
	}
	if sum.cancelStatus != asynctasks.StatusCanceled || total.Cancelled != 1 {
		problems = append(problems, fmt.Sprintf("task %d ended %s (%d cancellations)", sum.cancelledTask, sum.cancelStatus, total.Cancelled))
	}
	if sum.fieldVersion != int64(sum.fieldRemovals) {
		problems = append(problems, fmt.Sprintf("schema version %d after %d removals: a removal overlapped another", sum.fieldVersion, sum.fieldRemovals))
	}
	if len(problems) > 0 {
		return fmt.Errorf("demo found problems: %s", strings.Join(problems, "; "))
	}
	d.printf("\nall four scenarios behaved as expected\n")
	return nil
}

func countEvents(evs []event, pred func(event) bool) int {
	n := 0
	for _, e := range evs {
		if pred(e) {
			n++
		}
	}
	return n
}

func nodeName(i int) string { return fmt.Sprintf("node-%d", i+1) }

// --- node processes ---------------------------------------------------------

// nodeProc is one node process seen from the demo.
type nodeProc struct {
	idx   int
	cmd   *exec.Cmd
	stdin io.WriteCloser
	inMu  sync.Mutex // guards stdin
	seq   atomic.Int64

	mu      sync.Mutex // guards replies
	replies map[int64]chan nodeMsg

	ready  chan struct{}
	exited chan struct{} // closed when the process has exited and its output is read
	err    error         // the process's exit error, set before exited closes
}

func (d *demo) startNodes(ctx context.Context) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the pgcoord executable: %w", err)
	}
	d.printf("starting %d instances as separate processes: %s node --instance N\n", demoNodes, exe)
	for i := range demoNodes {
		n, err := d.startNode(ctx, exe, i)
		if err != nil {
			return err
		}
		d.nodes = append(d.nodes, n)
	}
	for _, n := range d.nodes {
		select {
		case <-n.ready:
		case <-n.exited:
			return fmt.Errorf("%s exited before it was ready: %v", nodeName(n.idx), n.err)
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s to start: %w", nodeName(n.idx), ctx.Err())
		}
	}
	d.printf("all %d instances started (app %q)\n", demoNodes, d.appName)
	return nil
}

func (d *demo) startNode(ctx context.Context, exe string, i int) (*nodeProc, error) {
	cmd := exec.CommandContext(ctx, exe, "node", "--instance", fmt.Sprint(i+1), "--app", d.appName,
		"--demo-schema", d.demoSchema, "--schema", d.db.Schema)
	cmd.Env = append(os.Environ(), "PGCOORD_DATABASE_URL="+d.db.URL)
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", nodeName(i), err)
	}
	n := &nodeProc{idx: i, cmd: cmd, stdin: stdin, replies: map[int64]chan nodeMsg{}, ready: make(chan struct{}), exited: make(chan struct{})}
	var readers sync.WaitGroup
	readers.Add(2)
	go func() {
		defer readers.Done()
		d.readNode(n, stdout)
	}()
	go func() {
		defer readers.Done()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			d.outMu.Lock()
			fmt.Fprintf(d.errOut, "[%s] %s\n", nodeName(i), sc.Text())
			d.outMu.Unlock()
		}
	}()
	go func() {
		readers.Wait()
		n.err = cmd.Wait()
		close(n.exited)
	}()
	return n, nil
}

// readNode narrates a node's lines and routes its replies and events.
func (d *demo) readNode(n *nodeProc, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var readyOnce sync.Once
	for sc.Scan() {
		var m nodeMsg
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			d.printf("[%s] %s\n", nodeName(n.idx), sc.Text())
			continue
		}
		switch m.T {
		case "ready":
			readyOnce.Do(func() { close(n.ready) })
		case "log":
			d.printf("[%s] %s\n", nodeName(n.idx), m.Msg)
		case "event":
			d.printf("[%s] %s\n", nodeName(n.idx), m.Msg)
			d.events.add(event{node: n.idx, nodeMsg: m})
		case "reply":
			n.mu.Lock()
			ch := n.replies[m.Seq]
			delete(n.replies, m.Seq)
			n.mu.Unlock()
			if ch != nil {
				ch <- m
			}
		}
	}
}

// pendingCall is a command sent to a node whose reply is awaited.
type pendingCall struct {
	n     *nodeProc
	c     nodeCmd
	reply chan nodeMsg
	err   error
}

func (d *demo) start(i int, c nodeCmd) pendingCall {
	n := d.nodes[i]
	c.Seq = n.seq.Add(1)
	p := pendingCall{n: n, c: c, reply: make(chan nodeMsg, 1)}
	n.mu.Lock()
	n.replies[c.Seq] = p.reply
	n.mu.Unlock()
	line, err := json.Marshal(c)
	if err == nil {
		n.inMu.Lock()
		_, err = n.stdin.Write(append(line, '\n'))
		n.inMu.Unlock()
	}
	p.err = err
	return p
}

func (p pendingCall) wait(ctx context.Context) (nodeMsg, error) {
	if p.err != nil {
		return nodeMsg{}, fmt.Errorf("%s %s: %w", nodeName(p.n.idx), p.c.Cmd, p.err)
	}
	select {
	case m := <-p.reply:
		if m.Err != "" {
			return m, fmt.Errorf("%s %s: %s", nodeName(p.n.idx), p.c.Cmd, m.Err)
		}
		return m, nil
	case <-p.n.exited:
		return nodeMsg{}, fmt.Errorf("%s exited during %s: %v", nodeName(p.n.idx), p.c.Cmd, p.n.err)
	case <-ctx.Done():
		return nodeMsg{}, fmt.Errorf("%s %s: %w", nodeName(p.n.idx), p.c.Cmd, ctx.Err())
	}
}

func (d *demo) call(ctx context.Context, i int, c nodeCmd) (nodeMsg, error) {
	return d.start(i, c).wait(ctx)
}

// callAll sends c to every node at once and waits for every reply.
func (d *demo) callAll(ctx context.Context, c nodeCmd) error {
	var calls []pendingCall
	for i := range d.nodes {
		calls = append(calls, d.start(i, c))
	}
	var errs []error
	for _, p := range calls {
		_, err := p.wait(ctx)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// stopNodes asks every node to stop, waits for them to exit, and kills any
// that does not in time.
func (d *demo) stopNodes(ctx context.Context) error {
	if len(d.nodes) == 0 {
		return nil
	}
	var calls []pendingCall
	for i := range d.nodes {
		calls = append(calls, d.start(i, nodeCmd{Cmd: "stop"}))
	}
	var errs []error
	for _, p := range calls {
		_, _ = p.wait(ctx) // the reply or the exit, whichever comes
		_ = p.n.stdin.Close()
		select {
		case <-p.n.exited:
			if p.n.err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", nodeName(p.n.idx), p.n.err))
			}
		case <-ctx.Done():
			_ = p.n.cmd.Process.Kill()
			<-p.n.exited
			errs = append(errs, fmt.Errorf("%s did not stop in time: killed", nodeName(p.n.idx)))
		}
	}
	d.nodes = nil
	return errors.Join(errs...)
}

// dropDemoData removes the demo's schema and the app's rows in pgcoord's tables.
func (d *demo) dropDemoData(ctx context.Context) error {
	_, err := d.pool.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{d.demoSchema}.Sanitize()+` CASCADE`)
	if err != nil {
		return fmt.Errorf("drop the demo schema: %w", err)
	}
	// Best effort: the app's rows in pgcoord's own tables. (River's finished
	// jobs are removed by River's cleaner.)
	for _, table := range []string{"cache_entries", "messages", "locks"} {
		q := `DELETE FROM ` + pgx.Identifier{d.db.Schema, table}.Sanitize() + ` WHERE app = $1`
		if _, err := d.pool.Exec(ctx, q, d.appName); err != nil {
			d.outMu.Lock()
			fmt.Fprintf(d.errOut, "pgcoord: remove the demo's rows from %s: %v\n", table, err)
			d.outMu.Unlock()
		}
	}
	return nil
}

// --- events -----------------------------------------------------------------

// event is a node's event as the demo records it.
type event struct {
	node int
	nodeMsg
}

// eventLog records every node's events; waiters look at those after a mark.
type eventLog struct {
	mu      sync.Mutex // guards events and changed
	events  []event
	changed chan struct{} // closed and replaced on every add
}

func newEventLog() *eventLog { return &eventLog{changed: make(chan struct{})} }

func (l *eventLog) add(e event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// mark is the position after the events recorded so far.
func (l *eventLog) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.events)
}

// wait returns once done holds for the events recorded after mark.
func (l *eventLog) wait(ctx context.Context, mark int, what string, done func([]event) bool) error {
	for {
		l.mu.Lock()
		evs := slices.Clone(l.events[mark:])
		changed := l.changed
		l.mu.Unlock()
		if done(evs) {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("waiting until %s: %w", what, ctx.Err())
		}
	}
}
