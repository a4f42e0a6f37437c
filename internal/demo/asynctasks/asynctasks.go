// Package asynctasks is the third scenario of NocoBase's cluster plugin guide
// (its plugin-async-task-manager) as a pgcoord plugin: tasks are rows of a
// tasks table, run through the EventQueue by whichever instance has a free
// slot (per-instance concurrency, Consumer.Concurrency), and a cancel is
// broadcast over PubSub so that it stops the task on the instance running it.
//
// Statuses: PENDING → RUNNING → SUCCEEDED | FAILED, and CANCELED from
// PENDING or RUNNING.
//
// Differences from NocoBase, all on purpose:
//
//   - [Plugin.CreateTask] inserts the row and publishes the queue message in
//     one transaction ([queue.EventQueue.PublishTx]): the message exists if and
//     only if the row committed, so a consumer never looks for a row that is
//     not there yet (NocoBase publishes before the commit) and a rolled-back
//     task never runs.
//   - A task runs once at a time: the consumer claims it with
//     UPDATE … WHERE status = 'PENDING', so a task cancelled while queued, or
//     already finished, does not run again.
//   - A task interrupted because its instance stops (past the stop's grace
//     period) goes back to PENDING and runs again on another instance. A task
//     whose instance died stays RUNNING until the queue hands its message to
//     another instance (within seconds of the instance's death, see
//     queue.RescueBound; never while the instance lives), which runs it
//     again (NocoBase loses it).
//   - [Plugin.CancelTask] marks the row CANCELED and publishes the cancel
//     signal in the same transaction; the instance running the task cancels
//     its context (the signal is logged, so an instance whose listener was
//     reconnecting still gets it).
package asynctasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/demo/demoschema"
	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/queue"
	"github.com/pgcoord/pgcoord/txhooks"
)

// PluginName is the plugin's name.
const PluginName = "async-task-manager"

// Channels: the queue channel tasks run through and the pub/sub channel of
// cancel signals (NocoBase's "<plugin>.task" and "<plugin>.task.cancel").
const (
	TaskChannel   = PluginName + ".task"
	CancelChannel = PluginName + ".task.cancel"
)

// Task statuses.
const (
	StatusPending   = "PENDING"
	StatusRunning   = "RUNNING"
	StatusSucceeded = "SUCCEEDED"
	StatusFailed    = "FAILED"
	StatusCanceled  = "CANCELED"
)

// Defaults of Config.
const (
	// DefaultConcurrency is NocoBase's ASYNC_TASK_MAX_CONCURRENCY default.
	DefaultConcurrency = 3
	// DefaultTimeout bounds one run of a task.
	DefaultTimeout = time.Minute
)

// ErrEmptyType is returned by CreateTask for a task without a type.
var ErrEmptyType = errors.New("asynctasks: empty task type")

// Task is a row of the tasks table.
type Task struct {
	ID     int64
	Type   string
	Params json.RawMessage
	Status string
	// Result is the executor's result (SUCCEEDED) or {"error": "..."} (FAILED).
	Result json.RawMessage
	// Instance is the id of the instance that ran it, "" if none did.
	Instance string
}

// Executor runs one task. ctx is cancelled when the task is cancelled from
// any instance, at its timeout, and when the app stops for too long.
type Executor func(ctx context.Context, t Task) (result any, err error)

// Event reports what happened to a task on this instance (for logs, tests
// and the demo).
type Event struct {
	Kind        string // "started", "succeeded", "failed", "cancelled", "interrupted"
	TaskID      int64
	Type        string
	Instance    string // this instance
	RequestedBy string // "cancelled": the instance that asked
	Err         error  // "failed": the executor's error
}

// Config configures the plugin.
type Config struct {
	// Schema holds the tasks table. Defaults to "public".
	Schema string
	// Concurrency is how many tasks this instance runs at once. Defaults to
	// DefaultConcurrency.
	Concurrency int
	// Timeout bounds one run of a task. Defaults to DefaultTimeout.
	Timeout time.Duration
	// Execute runs a task. Required.
	Execute Executor
	// OnEvent, when set, is called for every event on this instance.
	OnEvent func(Event)
}

// Stats are this instance's counters.
type Stats struct {
	// Ran counts the tasks this instance started.
	Ran int64
	// MaxRunning is the most tasks this instance ran at once.
	MaxRunning int64
	// Cancelled counts the running tasks this instance stopped because of a cancel.
	Cancelled int64
}

// cancelSignal is the payload of a cancel broadcast, and the cause of a
// cancelled task's context.
type cancelSignal struct {
	ID          int64  `json:"id"`
	RequestedBy string `json:"-"`
}

func (c *cancelSignal) Error() string {
	return fmt.Sprintf("task %d cancelled by %s", c.ID, c.RequestedBy)
}

// Plugin manages async tasks on one instance. Create it with New and pass it
// in app.Config.Plugins.
type Plugin struct {
	cfg   Config
	table string
	app   *app.App
	sub   *listen.Subscription

	mu      sync.Mutex // guards running
	running map[int64]context.CancelCauseFunc

	ran, now, maxRunning, cancelled atomic.Int64
}

// New returns the plugin.
func New(cfg Config) (*Plugin, error) {
	var err error
	if cfg.Schema, err = demoschema.Name("asynctasks: Config.Schema", cfg.Schema); err != nil {
		return nil, err
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Concurrency < 0 {
		return nil, errors.New("asynctasks: Config.Concurrency must not be negative")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Execute == nil {
		return nil, errors.New("asynctasks: Config.Execute is required")
	}
	return &Plugin{cfg: cfg, table: pgx.Identifier{cfg.Schema, "tasks"}.Sanitize(), running: map[int64]context.CancelCauseFunc{}}, nil
}

// Name implements app.Plugin.
func (p *Plugin) Name() string { return PluginName }

// EnsureSchema creates schema and its tasks table if needed, under an advisory
// transaction lock so that instances starting at once do not race.
func EnsureSchema(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	newPlugin := func(schema string) (*Plugin, error) {
		return New(Config{Schema: schema, Execute: func(context.Context, Task) (any, error) { return nil, nil }})
	}
	return demoschema.EnsureNew(ctx, pool, schema, newPlugin, (*Plugin).ensureSchema)
}

func (p *Plugin) ensureSchema(ctx context.Context, pool *pgxpool.Pool) error {
	return demoschema.Ensure(ctx, pool, p.cfg.Schema, PluginName, `
			CREATE TABLE IF NOT EXISTS `+p.table+` (
				id         bigserial PRIMARY KEY,
				type       text NOT NULL,
				params     jsonb NOT NULL DEFAULT 'null',
				status     text NOT NULL DEFAULT 'PENDING'
				           CHECK (status IN ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELED')),
				result     jsonb,
				instance   text,
				created_at timestamptz NOT NULL DEFAULT now(),
				started_at timestamptz,
				done_at    timestamptz
			)`)
}

// Load creates the table if needed, consumes the task channel with this
// instance's concurrency and listens for cancel signals.
func (p *Plugin) Load(ctx context.Context, a *app.App) error {
	if err := p.ensureSchema(ctx, a.DB()); err != nil {
		return fmt.Errorf("asynctasks: create table: %w", err)
	}
	p.app = a
	if err := a.EventQueue().Subscribe(ctx, TaskChannel, queue.Consumer{Concurrency: p.cfg.Concurrency, Process: p.process}); err != nil {
		return fmt.Errorf("asynctasks: subscribe %s: %w", TaskChannel, err)
	}
	sub, err := a.PubSub().Subscribe(ctx, CancelChannel, p.onCancelSignal, nil)
	if err != nil {
		return fmt.Errorf("asynctasks: subscribe %s: %w", CancelChannel, err)
	}
	p.sub = sub
	return nil
}

// BeforeStop stops listening for cancel signals; the app then stops the
// queue, waiting for running tasks.
func (p *Plugin) BeforeStop(ctx context.Context, a *app.App) error {
	if p.sub != nil {
		p.sub.Unsubscribe()
	}
	return nil
}

// Stats returns this instance's counters.
func (p *Plugin) Stats() Stats {
	return Stats{Ran: p.ran.Load(), MaxRunning: p.maxRunning.Load(), Cancelled: p.cancelled.Load()}
}

// CreateTask inserts a PENDING task and queues it, in one transaction.
func (p *Plugin) CreateTask(ctx context.Context, taskType string, params any) (int64, error) {
	if p.app == nil {
		return 0, app.ErrPluginNotBound
	}
	var id int64
	err := txhooks.Run(ctx, p.app.DB(), func(ctx context.Context, tx *txhooks.Tx) (err error) {
		id, err = p.CreateTaskTx(ctx, tx, taskType, params)
		return err
	})
	return id, err
}

// CreateTaskTx inserts a PENDING task and queues it inside tx: on commit the
// task becomes visible and runnable together; on rollback neither exists.
func (p *Plugin) CreateTaskTx(ctx context.Context, tx pgx.Tx, taskType string, params any) (int64, error) {
	if p.app == nil {
		return 0, app.ErrPluginNotBound
	}
	if taskType == "" {
		return 0, ErrEmptyType
	}
	raw, err := json.Marshal(params)
	if err != nil {
		return 0, fmt.Errorf("asynctasks: encode params: %w", err)
	}
	var id int64
	if err := tx.QueryRow(ctx, `INSERT INTO `+p.table+` (type, params) VALUES ($1, $2) RETURNING id`, taskType, raw).Scan(&id); err != nil {
		return 0, fmt.Errorf("asynctasks: insert task: %w", err)
	}
	if _, err := p.app.EventQueue().PublishTx(ctx, tx, TaskChannel, cancelSignal{ID: id}, &queue.PublishOpts{Timeout: p.cfg.Timeout}); err != nil {
		return 0, fmt.Errorf("asynctasks: queue task %d: %w", id, err)
	}
	return id, nil
}

// Task reads a task's row.
func (p *Plugin) Task(ctx context.Context, id int64) (Task, error) {
	if p.app == nil {
		return Task{}, app.ErrPluginNotBound
	}
	var t Task
	var inst *string
	err := p.app.DB().QueryRow(ctx, `SELECT id, type, params, status, result, instance FROM `+p.table+` WHERE id = $1`, id).
		Scan(&t.ID, &t.Type, &t.Params, &t.Status, &t.Result, &inst)
	if err != nil {
		return Task{}, fmt.Errorf("asynctasks: task %d: %w", id, err)
	}
	if inst != nil {
		t.Instance = *inst
	}
	return t, nil
}

// CancelTask cancels a PENDING or RUNNING task from any instance: the row is
// set CANCELED and, in the same transaction, a cancel signal is broadcast to
// the other instances; whichever runs the task cancels its context. A task
// running on this instance is cancelled directly. It reports whether the task
// was cancelled: false, without error, for a finished or unknown task (as
// NocoBase).
func (p *Plugin) CancelTask(ctx context.Context, id int64) (bool, error) {
	if p.app == nil {
		return false, app.ErrPluginNotBound
	}
	var cancelled bool
	err := txhooks.Run(ctx, p.app.DB(), func(ctx context.Context, tx *txhooks.Tx) error {
		tag, err := tx.Exec(ctx, `
			UPDATE `+p.table+` SET status = 'CANCELED', done_at = now()
			WHERE id = $1 AND status IN ('PENDING', 'RUNNING')`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return nil
		}
		cancelled = true
		if p.isRunning(id) {
			// Running here: no one else runs it. Stop it once CANCELED is committed.
			tx.AfterCommit(func(context.Context) error {
				p.cancelLocal(id, p.app.InstanceID())
				return nil
			})
			return nil
		}
		// skip self (the default): only the other instances receive it.
		return p.app.PubSub().PublishTx(ctx, tx, CancelChannel, cancelSignal{ID: id}, nil)
	})
	if err != nil {
		return false, fmt.Errorf("asynctasks: cancel task %d: %w", id, err)
	}
	return cancelled, nil
}

// onCancelSignal handles another instance's cancel broadcast: only the
// instance running the task acts.
func (p *Plugin) onCancelSignal(ctx context.Context, msg listen.Message) error {
	var s cancelSignal
	if err := json.Unmarshal(msg.Payload, &s); err != nil {
		return fmt.Errorf("asynctasks: bad cancel signal: %w", err)
	}
	if !p.cancelLocal(s.ID, msg.Sender) {
		p.app.Logger().DebugContext(ctx, "asynctasks: cancelled task not running on this instance", slog.Int64("task_id", s.ID))
	}
	return nil
}

func (p *Plugin) isRunning(id int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.running[id]
	return ok
}

// cancelLocal cancels the task's context if it runs here.
func (p *Plugin) cancelLocal(id int64, requestedBy string) bool {
	p.mu.Lock()
	cancel, ok := p.running[id]
	p.mu.Unlock()
	if ok {
		cancel(&cancelSignal{ID: id, RequestedBy: requestedBy})
	}
	return ok
}

// process runs one queued task.
func (p *Plugin) process(ctx context.Context, msg queue.Message) error {
	var s cancelSignal
	if err := json.Unmarshal(msg.Payload, &s); err != nil {
		return fmt.Errorf("asynctasks: bad queue message: %w", err)
	}
	id := s.ID
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Registered before the claim: a cancel that commits after the claim finds it.
	p.mu.Lock()
	p.running[id] = cancel
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.running, id)
		p.mu.Unlock()
	}()

	t := Task{ID: id, Status: StatusRunning, Instance: p.app.InstanceID()}
	err := p.app.DB().QueryRow(ctx, `
		UPDATE `+p.table+` SET status = 'RUNNING', instance = $2, started_at = now()
		WHERE id = $1 AND (status = 'PENDING'
			-- its instance died: a live run ends (timed out) within its timeout
			OR (status = 'RUNNING' AND started_at < now() - make_interval(secs => $3)))
		RETURNING type, params`, id, t.Instance, msg.Options.Timeout.Seconds()).Scan(&t.Type, &t.Params)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil // cancelled before it ran, or already run
	case err != nil && ctx.Err() != nil:
		return nil // cancelled while claiming
	case err != nil:
		return fmt.Errorf("asynctasks: claim task %d: %w", id, err)
	}
	p.ran.Add(1)
	n := p.now.Add(1)
	for m := p.maxRunning.Load(); n > m && !p.maxRunning.CompareAndSwap(m, n); m = p.maxRunning.Load() {
	}
	defer p.now.Add(-1)
	p.emit(Event{Kind: "started", TaskID: id, Type: t.Type})

	result, runErr := p.run(ctx, t)

	done := context.WithoutCancel(ctx)
	var sig *cancelSignal
	if errors.As(context.Cause(ctx), &sig) {
		// The canceller already set CANCELED; this covers a local cancel too.
		_, err := p.app.DB().Exec(done, `UPDATE `+p.table+` SET status = 'CANCELED', done_at = coalesce(done_at, now()) WHERE id = $1 AND status IN ('RUNNING', 'CANCELED')`, id)
		p.cancelled.Add(1)
		p.emit(Event{Kind: "cancelled", TaskID: id, Type: t.Type, RequestedBy: sig.RequestedBy})
		return err
	}
	if ctx.Err() != nil && !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		// This instance is stopping and its grace period ran out: the task
		// goes back to PENDING and the queue hands the message to another
		// instance (returning ctx's error requeues it without charging an attempt).
		if _, err := p.app.DB().Exec(done, `UPDATE `+p.table+` SET status = 'PENDING', instance = NULL, started_at = NULL WHERE id = $1 AND status = 'RUNNING'`, id); err != nil {
			return errors.Join(ctx.Err(), err)
		}
		p.emit(Event{Kind: "interrupted", TaskID: id, Type: t.Type})
		return ctx.Err()
	}
	status, kind := StatusSucceeded, "succeeded"
	var raw []byte
	if runErr == nil {
		raw, runErr = json.Marshal(result)
	}
	if runErr != nil {
		status, kind = StatusFailed, "failed"
		raw, _ = json.Marshal(map[string]string{"error": runErr.Error()})
	}
	// Only from RUNNING: a cancel that won the race keeps CANCELED.
	if _, err := p.app.DB().Exec(done, `UPDATE `+p.table+` SET status = $2, result = $3, done_at = now() WHERE id = $1 AND status = 'RUNNING'`, id, status, raw); err != nil {
		return fmt.Errorf("asynctasks: finish task %d: %w", id, err)
	}
	p.emit(Event{Kind: kind, TaskID: id, Type: t.Type, Err: runErr})
	return nil // a failed task is FAILED, not retried (NocoBase's maxRetries 0)
}

func (p *Plugin) run(ctx context.Context, t Task) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("task panicked: %v", r)
		}
	}()
	return p.cfg.Execute(ctx, t)
}

func (p *Plugin) emit(e Event) {
	e.Instance = p.app.InstanceID()
	if p.cfg.OnEvent != nil {
		p.cfg.OnEvent(e)
	}
}
