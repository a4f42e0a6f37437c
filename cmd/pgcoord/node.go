package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/dbflag"
	"github.com/pgcoord/pgcoord/internal/demo/asynctasks"
	"github.com/pgcoord/pgcoord/internal/demo/authcache"
	"github.com/pgcoord/pgcoord/internal/demo/fielddestroy"
	"github.com/pgcoord/pgcoord/internal/demo/schemasync"
	"github.com/pgcoord/pgcoord/listen"
)

// The demo's parent and its node processes talk in JSON lines: the parent
// writes a nodeCmd per line on the node's stdin, the node writes nodeMsg
// lines on its stdout (narration, events and replies). A node stops when it
// gets "stop" or when its stdin closes (the parent died), so it never
// outlives the demo.

// nodeCmd is one command from the demo to a node.
type nodeCmd struct {
	Seq        int64    `json:"seq"`
	Cmd        string   `json:"cmd"`
	Collection string   `json:"collection,omitempty"`
	Field      string   `json:"field,omitempty"`
	Fields     []string `json:"fields,omitempty"`
	Task       int64    `json:"task,omitempty"`
	Type       string   `json:"type,omitempty"`
	Count      int      `json:"count,omitempty"`
	Expiry     string   `json:"expiry,omitempty"`
	Rollback   bool     `json:"rollback,omitempty"`
}

// nodeMsg is one line from a node: "ready", "log" (narration), "event"
// (narration the demo may wait for) or "reply" (to the command Seq).
type nodeMsg struct {
	T    string `json:"t"`
	Msg  string `json:"msg,omitempty"`
	Seq  int64  `json:"seq,omitempty"`
	Err  string `json:"err,omitempty"`
	Kind string `json:"kind,omitempty"`
	// Event and reply data.
	Task       int64      `json:"task,omitempty"`
	Sender     string     `json:"sender,omitempty"`
	Collection string     `json:"collection,omitempty"`
	Field      string     `json:"field,omitempty"`
	IDs        []int64    `json:"ids,omitempty"`
	Names      []string   `json:"names,omitempty"`
	Stats      *nodeStats `json:"stats,omitempty"`
}

// nodeStats is a node's contribution to the demo's summary table.
type nodeStats struct {
	CacheHits    uint64 `json:"cache_hits"`
	CacheMisses  uint64 `json:"cache_misses"`
	LoaderRuns   int64  `json:"loader_runs"`
	SyncMessages int64  `json:"sync_messages"`
	TasksRun     int64  `json:"tasks_run"`
	Cancelled    int64  `json:"cancelled"`
	LockWaits    int64  `json:"lock_waits"`
}

// Demo task types: a short one and one that runs until cancelled.
const (
	demoShortTask = "resize-image"
	demoLongTask  = "export-report"
	// demoShortTaskTime is how long a short task works.
	demoShortTaskTime = 300 * time.Millisecond
	// demoCriticalHold widens the field-removal critical section so that the
	// demo shows instances waiting for the lock.
	demoCriticalHold = 150 * time.Millisecond
)

// node is one demo instance: an app with the four example plugins.
type node struct {
	name  string
	out   *json.Encoder
	outMu sync.Mutex // guards out

	app    *app.App
	auth   *authcache.Plugin
	schema *schemasync.Plugin
	tasks  *asynctasks.Plugin
	fields *fielddestroy.Plugin
}

func (n *node) send(m nodeMsg) {
	n.outMu.Lock()
	defer n.outMu.Unlock()
	_ = n.out.Encode(m)
}

func (n *node) logf(format string, args ...any) {
	n.send(nodeMsg{T: "log", Msg: fmt.Sprintf(format, args...)})
}

func (n *node) event(m nodeMsg) {
	m.T = "event"
	n.send(m)
}

const nodeUsage = "Usage: pgcoord node --instance N [flags]\n\nOne instance of `pgcoord demo`, driven over stdin/stdout; not for direct use.\n\nFlags:\n"

// cmdNode runs one demo instance (hidden: started by `pgcoord demo`).
func cmdNode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runNode(ctx, args, os.Stdin, stdout, stderr)
}

func runNode(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs, flags := newCommand("node", nodeUsage, stderr)
	instance := fs.Int("instance", 1, "instance number")
	appName := fs.String("app", "demo", "app name")
	demoSchema := fs.String("demo-schema", "public", "schema of the example plugins' tables")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if flags.URL == "" {
		return dbflag.ErrNoDatabase
	}
	n := &node{name: fmt.Sprintf("node-%d", *instance), out: json.NewEncoder(stdout)}
	if err := n.build(ctx, *flags, *appName, *demoSchema, stderr); err != nil {
		return err
	}
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := n.app.Start(startCtx)
	cancel()
	if err != nil {
		return fmt.Errorf("%s: start: %w", n.name, err)
	}
	n.send(nodeMsg{T: "ready"})

	var wg sync.WaitGroup
	err = n.serve(ctx, stdin, &wg)
	wg.Wait()
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer cancel()
	return errors.Join(err, n.app.Stop(stopCtx))
}

func (n *node) build(ctx context.Context, db dbflag.Flags, appName, demoSchema string, stderr io.Writer) error {
	var err error
	if n.auth, err = authcache.New(demoSchema); err != nil {
		return err
	}
	if n.schema, err = schemasync.New(demoSchema); err != nil {
		return err
	}
	n.schema.OnReload = func(r schemasync.Reload) {
		c, _ := n.schema.Collection(r.Collection)
		n.event(nodeMsg{Kind: "reload", Collection: r.Collection, Sender: r.Sender,
			Msg: fmt.Sprintf("sync message from %s: reloaded collection %q from the database (fields: %s)", r.Sender, r.Collection, strings.Join(c.Fields, ", "))})
	}
	if n.fields, err = fielddestroy.New(demoSchema); err != nil {
		return err
	}
	n.fields.InCriticalSection = func(ctx context.Context, collection, field string) {
		n.logf("inside the lock fields.beforeDestroy:%s, removing field %s", collection, field)
		select { // hold the lock a little so the others visibly wait
		case <-time.After(demoCriticalHold):
		case <-ctx.Done():
		}
	}
	n.fields.OnSync = func(m fielddestroy.Message, sender string) {
		msg := fmt.Sprintf("sync message from %s: collection %q now has fields %s", sender, m.CollectionName, strings.Join(n.fields.Fields(m.CollectionName), ", "))
		if m.Type == fielddestroy.TypeRemoveField {
			msg = fmt.Sprintf("sync message from %s: dropped field %s.%s from memory", sender, m.CollectionName, m.FieldName)
		}
		n.event(nodeMsg{Kind: m.Type, Collection: m.CollectionName, Field: m.FieldName, Sender: sender, Msg: msg})
	}
	n.tasks, err = asynctasks.New(asynctasks.Config{
		Schema: demoSchema, Concurrency: 2, Timeout: 45 * time.Second,
		Execute: n.execute,
		OnEvent: func(e asynctasks.Event) {
			msg := fmt.Sprintf("task %d (%s) %s", e.TaskID, e.Type, e.Kind)
			switch e.Kind {
			case "started":
				msg = fmt.Sprintf("started task %d (%s)", e.TaskID, e.Type)
			case "cancelled":
				msg = fmt.Sprintf("cancelled task %d (requested by %s): its context was cancelled, status CANCELED", e.TaskID, e.RequestedBy)
			case "failed":
				msg = fmt.Sprintf("task %d (%s) failed: %v", e.TaskID, e.Type, e.Err)
			}
			n.event(nodeMsg{Kind: "task-" + e.Kind, Task: e.TaskID, Sender: e.RequestedBy, Msg: msg})
		},
	})
	if err != nil {
		return err
	}
	logger := warnLogger(stderr)
	n.app, err = app.New(ctx, app.Config{
		Name: appName, DatabaseURL: db.URL, InstanceID: n.name, Schema: db.Schema, Logger: logger,
		Plugins: []app.Plugin{n.auth, n.schema, n.tasks, n.fields},
		// NocoBase debounces sync messages for 1 s; the demo is in a hurry.
		Sync: &listen.SyncConfig{Debounce: 50 * time.Millisecond},
	})
	return err
}

// execute runs the demo's tasks.
func (n *node) execute(ctx context.Context, t asynctasks.Task) (any, error) {
	switch t.Type {
	case demoShortTask:
		select {
		case <-time.After(demoShortTaskTime):
			return map[string]string{"thumbnail": fmt.Sprintf("img-%d.png", t.ID)}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	case demoLongTask:
		n.logf("task %d (%s) is working until it is cancelled", t.ID, t.Type)
		<-ctx.Done() // bounded by the task's timeout
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("unknown task type %q", t.Type)
}

// serve reads commands until "stop" or the end of stdin. Each command runs in
// its own goroutine, so that one node can remove two fields at once.
func (n *node) serve(ctx context.Context, stdin io.Reader, wg *sync.WaitGroup) error {
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		var c nodeCmd
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			return fmt.Errorf("%s: bad command %q: %w", n.name, sc.Text(), err)
		}
		if c.Cmd == "stop" {
			wg.Wait()
			n.logf("stopping: plugins' BeforeStop, queue drained, pub/sub closed, locks released")
			n.send(nodeMsg{T: "reply", Seq: c.Seq})
			return nil
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			reply, err := n.handle(cctx, c)
			reply.T, reply.Seq = "reply", c.Seq
			if err != nil {
				reply.Err = err.Error()
			}
			n.send(reply)
		}()
	}
	if err := sc.Err(); err != nil {
		return err
	}
	n.logf("stdin closed: stopping")
	return nil
}

func (n *node) handle(ctx context.Context, c nodeCmd) (nodeMsg, error) {
	switch c.Cmd {
	case "auth-update":
		d, err := time.ParseDuration(c.Expiry)
		if err != nil {
			return nodeMsg{}, err
		}
		if err := n.auth.UpdatePolicy(ctx, authcache.TokenPolicy{TokenExpiry: d, RenewWindow: time.Hour}); err != nil {
			return nodeMsg{}, err
		}
		n.logf("token policy updated (tokens expire after %s); the cached copy was deleted in the same transaction", d)
	case "auth-read":
		hits := n.auth.Cache().Stats().Hits // this node reads one at a time
		p, loaded, err := n.auth.Policy(ctx)
		if err != nil {
			return nodeMsg{}, err
		}
		how := "cache miss: waited for another instance's loader and read its result from the shared cache"
		switch {
		case loaded:
			how = "cache miss: this instance ran the loader (read token_policies)"
		case n.auth.Cache().Stats().Hits > hits:
			how = "cache hit in the shared cache"
		}
		n.logf("token policy: tokens expire after %s; %s", p.TokenExpiry, how)
	case "collection-save":
		col := schemasync.Collection{Name: c.Collection, Title: c.Collection, Fields: c.Fields}
		if c.Rollback {
			err := func() error {
				tx, err := n.app.DB().Begin(ctx)
				if err != nil {
					return err
				}
				defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
				return n.schema.SaveCollectionTx(ctx, tx, col)
			}()
			if err != nil {
				return nodeMsg{}, err
			}
			n.logf("saved collection %q and its sync message in a transaction, then rolled back: nothing is sent", c.Collection)
			break
		}
		if err := n.schema.SaveCollection(ctx, col); err != nil {
			return nodeMsg{}, err
		}
		n.logf("committed collection %q (fields: %s) with its sync message in the same transaction", c.Collection, strings.Join(c.Fields, ", "))
	case "collections":
		names := n.schema.Names()
		n.logf("collections in memory: %s", strings.Join(names, ", "))
		return nodeMsg{Names: names}, nil
	case "task-create":
		var ids []int64
		for range max(c.Count, 1) {
			id, err := n.tasks.CreateTask(ctx, c.Type, nil)
			if err != nil {
				return nodeMsg{}, err
			}
			ids = append(ids, id)
		}
		n.logf("created %d %s task(s) %v: row and queue message in one transaction", len(ids), c.Type, ids)
		return nodeMsg{IDs: ids}, nil
	case "task-cancel":
		n.logf("cancelling task %d: status CANCELED and a cancel broadcast (skip self) in one transaction", c.Task)
		ok, err := n.tasks.CancelTask(ctx, c.Task)
		if err != nil {
			return nodeMsg{}, err
		}
		if !ok {
			return nodeMsg{}, fmt.Errorf("task %d was not running or pending", c.Task)
		}
	case "fields-add":
		if err := n.fields.AddFields(ctx, c.Collection, c.Fields...); err != nil {
			return nodeMsg{}, err
		}
		n.logf("added fields %s to %q", strings.Join(c.Fields, ", "), c.Collection)
	case "field-remove":
		n.logf("removing field %s.%s: waiting for the lock fields.beforeDestroy:%s", c.Collection, c.Field, c.Collection)
		removed, err := n.fields.RemoveField(ctx, c.Collection, c.Field)
		if err != nil {
			return nodeMsg{}, err
		}
		if !removed {
			return nodeMsg{}, fmt.Errorf("field %s.%s did not exist", c.Collection, c.Field)
		}
		n.logf("removed field %s.%s, lock released; the others are told by a sync message", c.Collection, c.Field)
	case "stats":
		var st nodeStats
		if cache := n.auth.Cache(); cache != nil {
			cs := cache.Stats()
			st.CacheHits, st.CacheMisses = cs.Hits, cs.Misses
		}
		st.LoaderRuns = n.auth.Loads()
		st.SyncMessages = n.schema.Reloads() + n.fields.Synced()
		ts := n.tasks.Stats()
		st.TasksRun, st.Cancelled = ts.Ran, ts.Cancelled
		st.LockWaits = n.app.Locks().Stats().Waited
		return nodeMsg{Stats: &st}, nil
	default:
		return nodeMsg{}, fmt.Errorf("unknown command %q", c.Cmd)
	}
	return nodeMsg{}, nil
}
