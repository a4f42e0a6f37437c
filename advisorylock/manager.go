package advisorylock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/internal/ident"
	"github.com/pgcoord/pgcoord/internal/lifecycle"
	"github.com/pgcoord/pgcoord/internal/lockkey"
	"github.com/pgcoord/pgcoord/internal/schema"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Defaults of Config.
const (
	// DefaultAppName namespaces keys when Config.AppName is empty (NocoBase's main app).
	DefaultAppName = ident.DefaultAppName
	// DefaultTTL is the lease of Acquire and RunExclusive called with ttl 0 (NocoBase's 500 ms).
	DefaultTTL = 500 * time.Millisecond
	// DefaultPollInterval is how often a waiter re-checks a held key when no
	// NOTIFY woke it (jittered ±25%).
	DefaultPollInterval = time.Second
	// DefaultHealthCheckInterval is how often the liveness session is pinged when idle.
	DefaultHealthCheckInterval = 5 * time.Second
	// DefaultRetention is how long a free lease row is kept before the sweeper deletes it.
	DefaultRetention = time.Hour
)

// sweepBatch bounds one sweep statement.
const sweepBatch = 1000

// Config configures a Manager. A nil *Config means all defaults. The
// caller's struct is never modified.
type Config struct {
	// AppName namespaces every key: two apps sharing a database never contend
	// for the same key. Defaults to DefaultAppName.
	AppName string
	// InstanceID names this instance in the lease table and in logs.
	// Defaults to "<hostname>-<pid>-<random>".
	InstanceID string
	// Schema holds the locks table. Defaults to schema.Default.
	Schema string
	// Logger receives logs with lock_key, token and owner attributes.
	// Defaults to slog.Default().
	Logger *slog.Logger
	// DefaultTTL is used when Acquire or RunExclusive get ttl 0. Defaults to DefaultTTL.
	DefaultTTL time.Duration
	// PollInterval is the waiters' backstop when no NOTIFY arrives (an
	// instance that dies sends none). Defaults to DefaultPollInterval.
	PollInterval time.Duration
	// HealthCheckInterval is how often the liveness session is pinged; a
	// ping gets this long (at least 5s) to answer. It sets the bounds of a
	// silent partition (see the package documentation, "Failure model"):
	// the Manager declares its locks lost within HealthCheckInterval +
	// max(HealthCheckInterval, 5s) of its liveness flow going silent, and
	// the server ends a liveness session silent for one max(…, 5s) longer.
	// Defaults to DefaultHealthCheckInterval.
	HealthCheckInterval time.Duration
	// Retention is how long a free lease row (released, expired, or owned by
	// a dead instance) stays before the sweeper deletes it. Defaults to
	// DefaultRetention; the minimum is one minute.
	Retention time.Duration
	// MeterProvider receives the lock instruments (pgcoord.lock.*, see
	// docs/observability.md). Defaults to otel.GetMeterProvider() (a no-op
	// until the application installs an SDK).
	MeterProvider metric.MeterProvider
	// TracerProvider receives a span per acquisition that waits
	// (pgcoord.lock.acquire). Defaults to otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
}

func (c *Config) withDefaults() Config {
	var out Config
	if c != nil {
		out = *c
	}
	ident.Shared{AppName: &out.AppName, InstanceID: &out.InstanceID, Schema: &out.Schema, Logger: &out.Logger}.Defaults()
	if out.DefaultTTL == 0 {
		out.DefaultTTL = DefaultTTL
	}
	if out.PollInterval == 0 {
		out.PollInterval = DefaultPollInterval
	}
	if out.HealthCheckInterval == 0 {
		out.HealthCheckInterval = DefaultHealthCheckInterval
	}
	if out.Retention == 0 {
		out.Retention = DefaultRetention
	}
	return out
}

func (c Config) validate() error {
	if err := (ident.Shared{AppName: &c.AppName, InstanceID: &c.InstanceID, Schema: &c.Schema, Logger: &c.Logger}).Validate("Config"); err != nil {
		return err
	}
	if c.DefaultTTL < 0 {
		return fmt.Errorf("Config.DefaultTTL: must not be negative, got %v", c.DefaultTTL)
	}
	if c.PollInterval < 0 {
		return fmt.Errorf("Config.PollInterval: must not be negative, got %v", c.PollInterval)
	}
	if c.HealthCheckInterval < 0 {
		return fmt.Errorf("Config.HealthCheckInterval: must not be negative, got %v", c.HealthCheckInterval)
	}
	if c.Retention < time.Minute {
		return fmt.Errorf("Config.Retention: must be at least 1m, got %v", c.Retention)
	}
	return nil
}

// Stats are a Manager's counters since New.
type Stats struct {
	// Acquired counts grants (Acquire, TryAcquire, RunExclusive).
	Acquired int64
	// Waited counts grants that were not immediate: the key was held at the
	// first attempt.
	Waited int64
	// Contended counts attempts that found the key held (each poll or wake-up
	// of a waiter, and each failed TryAcquire).
	Contended int64
	// Handoffs counts grants passed by Release straight to a waiter of this
	// instance (included in Acquired).
	Handoffs int64
	// Designated counts grants this instance received from another
	// instance's Release (or from ForceRelease) that designated it as the
	// next holder of a key it waited for (included in Acquired).
	Designated int64
	// ExpiredTakeovers counts grants that replaced a lease that was never
	// released: it had expired or its owner's session had ended.
	ExpiredTakeovers int64
	// Lost counts grants that ended other than by Release: expiry, takeover,
	// or loss of the liveness session.
	Lost int64
	// Released counts grants ended by Release or Close.
	Released int64
	// Held is the number of grants held now.
	Held int64
	// Waiting is the number of calls waiting for a key now.
	Waiting int64
}

// Manager hands out locks to one instance of an application, on the lease
// table in Postgres. Create it with New, then Start it. It is safe for
// concurrent use.
type Manager struct {
	pool    *pgxpool.Pool
	cfg     Config
	log     *slog.Logger
	q       queries
	class   int32
	channel string

	lifeMu sync.Mutex // serialises Start and Close
	life   lifecycle.State
	cancel context.CancelFunc
	wg     sync.WaitGroup // background goroutines

	mu      sync.Mutex // guards the fields below
	state   mgrState
	live    bool   // the liveness session holds its identity lock (as far as we know)
	ownerID int32  // identity of the current liveness session; changes on reconnect
	livePID uint32 // backend pid of the current liveness session
	held    map[*Lock]struct{}
	queues  map[string]*waitQueue
	byHash  map[uint64][]*waitQueue
	liveGen chan struct{} // closed (and replaced) whenever liveness or state changes
	// hot holds keys this instance last saw contended (a failed attempt, a
	// release that designated): their grants and releases skip the
	// uncontended statements, which would only fail first. Bounded by
	// hotKeys (cleared when full: it is only a hint).
	hot map[string]struct{}

	acquired, waited, contended, handoffs, designated, takeovers, lostN, released atomic.Int64

	// tel holds the instruments (telemetry.go); Close unregisters its callback.
	tel *telemetry

	// onQueued, when set (tests only, before Start), is called when this
	// instance may have joined a key's FIFO: after a failed attempt of a
	// waiting call, and before a release that rejoins the tail.
	onQueued func()
}

type mgrState int

const (
	mgrNew mgrState = iota
	mgrStarted
	mgrClosed
)

// New returns a Manager for pool. It checks the configuration and touches
// no database; Start connects.
func New(pool *pgxpool.Pool, cfg *Config) (*Manager, error) {
	if pool == nil {
		return nil, errors.New("advisorylock: New: nil pool")
	}
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("advisorylock: New: %w: %w", ErrInvalidConfig, err)
	}
	ch := channelName(c.Schema)
	m := &Manager{
		pool:    pool,
		cfg:     c,
		log:     c.Logger.With(slog.String("component", "advisorylock"), slog.String("app", c.AppName), slog.String("instance_id", c.InstanceID)),
		q:       buildQueries(c.Schema, ch, tokenBlock),
		class:   lockkey.IdentityClass(c.Schema),
		channel: ch,
		held:    make(map[*Lock]struct{}),
		queues:  make(map[string]*waitQueue),
		byHash:  make(map[uint64][]*waitQueue),
		liveGen: make(chan struct{}),
		hot:     make(map[string]struct{}),
	}
	m.tel = newTelemetry(m, c.MeterProvider, c.TracerProvider)
	m.life.Errors(ErrClosed, ErrAlreadyStarted)
	return m, nil
}

// AppName returns the app namespace of this Manager's keys.
func (m *Manager) AppName() string { return m.cfg.AppName }

// InstanceID returns the instance name recorded as owner of this Manager's leases.
func (m *Manager) InstanceID() string { return m.cfg.InstanceID }

// Start opens the liveness session (a dedicated connection, not from the
// pool) that holds this instance's identity and LISTENs for releases, and
// starts the background sweeper. It fails fast when Postgres is not
// reachable. Calling Start twice returns ErrAlreadyStarted; after Close it
// returns ErrClosed; after a failed Start it may be called again.
func (m *Manager) Start(ctx context.Context) error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if err := m.life.BeginStart(); err != nil {
		return err
	}
	// Once per Start: an unmigrated or newer schema is a typed error
	// (migrations.ErrSchemaOutdated / ErrSchemaTooNew), not a raw SQL error.
	if err := schema.Check(ctx, m.pool, m.cfg.Schema); err != nil {
		return m.life.EndStart(fmt.Errorf("advisorylock: start: %w", err), nil)
	}
	s, err := m.connect(ctx)
	if err != nil {
		return m.life.EndStart(fmt.Errorf("advisorylock: start: %w", err), nil)
	}
	// lifeMu keeps Close out until Start returns: EndStart cannot see it.
	return m.life.EndStart(nil, func() {
		runCtx, cancel := context.WithCancel(context.Background())
		m.cancel = cancel
		m.goLive(s)
		m.log.Debug("lock manager started", slog.Int("owner_id", int(s.ownerID)))
		m.wg.Add(2)
		go func() { defer m.wg.Done(); m.runLiveness(runCtx, s) }()
		go func() { defer m.wg.Done(); m.runSweeper(runCtx) }()
	})
}

// Close releases every lock this Manager holds (their Done channels close),
// makes waiting calls return ErrClosed, stops the background goroutines and
// closes the liveness session, which ends this instance's identity. It is
// safe to call twice and before Start. Every later call returns ErrClosed.
// RunExclusive functions still running see their context cancelled.
func (m *Manager) Close(ctx context.Context) error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if first, _ := m.life.BeginStop(); !first {
		return nil
	}
	_ = m.tel.reg.Unregister()
	m.mu.Lock()
	wasStarted := m.state == mgrStarted
	m.state = mgrClosed
	held := make([]*Lock, 0, len(m.held))
	for l := range m.held {
		held = append(held, l)
	}
	owner := m.ownerID
	m.signalLocked()
	m.mu.Unlock()

	var relErr error
	if wasStarted && len(held) > 0 {
		relErr = m.releaseMany(ctx, held, owner)
	}
	for _, l := range held {
		l.finish(stateReleased)
	}
	if wasStarted {
		m.cancel()
		m.wg.Wait() // the liveness goroutine closes its session on the way out
	}
	if relErr != nil {
		return fmt.Errorf("advisorylock: close: release %d locks: %w", len(held), relErr)
	}
	return nil
}

func (m *Manager) releaseMany(ctx context.Context, held []*Lock, owner int32) error {
	keys := make([]string, len(held))
	tokens := make([]int64, len(held))
	for i, l := range held {
		keys[i], tokens[i] = l.key, l.token
	}
	var n, notified int64
	err := m.pool.QueryRow(ctx, m.q.releaseAll, m.cfg.AppName, keys, tokens, owner, m.channel).Scan(&n, &notified)
	if err == nil {
		m.log.Debug("released locks at close", slog.Int64("count", n))
	}
	return err
}

// Liveness reports whether the liveness session holds this instance's
// identity (as far as the Manager knows: it is checked every
// HealthCheckInterval) and the server process id (backend pid) of that
// session, which the instance registry and pg_stat_activity show. The pid is
// 0 before Start; it changes when the session reconnects.
func (m *Manager) Liveness() (live bool, pid uint32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.live && m.state == mgrStarted, m.livePID
}

// Stats returns the counters.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	heldN := int64(len(m.held))
	var waiting int64
	for _, q := range m.queues {
		waiting += int64(len(q.waiters))
	}
	m.mu.Unlock()
	return Stats{
		Acquired:         m.acquired.Load(),
		Waited:           m.waited.Load(),
		Contended:        m.contended.Load(),
		Handoffs:         m.handoffs.Load(),
		Designated:       m.designated.Load(),
		ExpiredTakeovers: m.takeovers.Load(),
		Lost:             m.lostN.Load(),
		Released:         m.released.Load(),
		Held:             heldN,
		Waiting:          waiting,
	}
}

// signalLocked wakes everything waiting for a state or liveness change. m.mu must be held.
func (m *Manager) signalLocked() {
	close(m.liveGen)
	m.liveGen = make(chan struct{})
}

// Acquire takes key, waiting as long as ctx allows, and returns the grant
// with a lease of ttl (0 means Config.DefaultTTL). The lease is not renewed:
// it ends after ttl unless extended (use RunExclusive to renew while working).
// Waiters of one instance queue in FIFO order, and instances in the key's
// FIFO: a release hands the key to the first live instance waiting for it,
// and instances are served round-robin (see the package documentation). Errors: ErrInvalidKey, ErrInvalidTTL, ctx's error,
// ErrNotStarted, ErrClosed. When ctx ends while a grant statement is in
// flight, that statement is allowed to finish (it may wait for a transaction
// that holds the lease row with CheckTx) and a grant it made is given back,
// so a cancelled call never leaves a lease behind.
func (m *Manager) Acquire(ctx context.Context, key string, ttl time.Duration) (l *Lock, err error) {
	ctx, end := m.tel.start(ctx, key)
	defer func() { end(err) }()
	if err := checkArgs(key, ttl, "ttl"); err != nil {
		return nil, fmt.Errorf("advisorylock: acquire: %w", err)
	}
	if ttl == 0 {
		ttl = m.cfg.DefaultTTL
	}
	l, err = m.wait(ctx, key, ttl, time.Time{})
	if err != nil {
		return nil, fmt.Errorf("advisorylock: acquire %q: %w", key, err)
	}
	return l, nil
}

// TryAcquire takes key and returns a reservation: a grant with no expiry,
// held until Release or Extend (which gives it a TTL) or until this
// instance's session ends. With wait == 0 it makes one attempt and returns a
// *LockAcquireError with ReasonLocked if the key is held; with wait > 0 it
// waits up to wait, then returns ReasonTimedOut. If ctx ends first, ctx's
// error is returned.
func (m *Manager) TryAcquire(ctx context.Context, key string, wait time.Duration) (l *Lock, err error) {
	ctx, end := m.tel.start(ctx, key)
	defer func() { end(err) }()
	if err := checkArgs(key, wait, "wait"); err != nil {
		return nil, fmt.Errorf("advisorylock: try acquire: %w", err)
	}
	if wait == 0 {
		if err := m.usable(); err != nil {
			return nil, fmt.Errorf("advisorylock: try acquire %q: %w", key, err)
		}
		l, _, err := m.attempt(ctx, key, 0, nil)
		switch {
		case errors.Is(err, errNotLive):
			return nil, fmt.Errorf("advisorylock: try acquire %q: %w", key, ErrUnavailable)
		case err != nil:
			return nil, fmt.Errorf("advisorylock: try acquire %q: %w", key, err)
		case l == nil:
			m.contended.Add(1)
			return nil, &LockAcquireError{Key: key, Reason: ReasonLocked}
		}
		return l, nil
	}
	l, err = m.wait(ctx, key, 0, time.Now().Add(wait))
	if errors.Is(err, errTimedOut) {
		return nil, &LockAcquireError{Key: key, Reason: ReasonTimedOut}
	}
	if err != nil {
		return nil, fmt.Errorf("advisorylock: try acquire %q: %w", key, err)
	}
	return l, nil
}

// RunExclusive waits for key (like Acquire), runs fn while renewing the
// lease every ttl/3 so that fn is never cut short by its TTL, and releases
// the lock when fn returns or panics. It returns fn's error. If the grant
// ends while fn runs (renewals failed for a whole ttl, the liveness session
// ended, or Close), fn's context is cancelled with cause ErrLockLost, and
// RunExclusive returns ErrLockLost (wrapped) if fn returned nil. Protect
// writes with l.CheckTx for strict exclusivity.
func (m *Manager) RunExclusive(ctx context.Context, key string, ttl time.Duration, fn func(ctx context.Context, l *Lock) error) error {
	if ttl == 0 {
		ttl = m.cfg.DefaultTTL
	}
	l, err := m.Acquire(ctx, key, ttl)
	if err != nil {
		return err
	}
	return l.runHeld(ctx, ttl, func(ctx context.Context) error { return fn(ctx, l) })
}

func checkArgs(key string, d time.Duration, name string) error {
	if err := validateKey(key); err != nil {
		return err
	}
	if d < 0 {
		return fmt.Errorf("%w: %s %v is negative", ErrInvalidTTL, name, d)
	}
	return nil
}

var (
	errNotLive  = errors.New("liveness session down")
	errTimedOut = errors.New("timed out")
)

// usable reports ErrNotStarted or ErrClosed.
func (m *Manager) usable() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch m.state {
	case mgrNew:
		return ErrNotStarted
	case mgrClosed:
		return ErrClosed
	}
	return nil
}

// attemptInfo is what a failed attempt learnt about the key.
type attemptInfo struct {
	// first: this instance is first in the key's FIFO (it alone acts on the
	// lease's expiry; the others wait for a designation or the poll).
	first bool
	// remaining is the held lease's remaining time (-1: no expiry).
	remaining time.Duration
}

// attempt makes one grant attempt for key with a lease of ttl (0: no
// expiry). It returns the Lock when granted, nil when the key is held or
// another instance is first in line. With q (a waiting call's queue) a
// failed attempt leaves this instance in the key's FIFO; without, it changes
// nothing (TryAcquire with no wait).
func (m *Manager) attempt(ctx context.Context, key string, ttl time.Duration, q *waitQueue) (*Lock, attemptInfo, error) {
	m.mu.Lock()
	live, owner, st := m.live, m.ownerID, m.state
	_, hot := m.hot[key]
	fast := !hot && (q == nil || len(q.waiters) <= 1)
	sent := time.Now()
	if q != nil && q.enqSent.IsZero() {
		// Set before sending: a designation made right after this statement
		// may be dispatched before it returns. Too early is only conservative.
		q.enqSent = sent
	}
	m.mu.Unlock()
	if st == mgrClosed {
		return nil, attemptInfo{}, ErrClosed
	}
	if !live {
		return nil, attemptInfo{}, errNotLive
	}
	var (
		token       int64
		mine, fresh bool
		takenFrom   *string
		us          int64
		info        attemptInfo
	)
	err := pgx.ErrNoRows
	if fast {
		// The uncontended grant: one short statement; no row when the key is
		// new, held, or has a queue, and then the full one decides.
		err = m.grantRow(ctx, m.q.acquireFree, []any{m.cfg.AppName, key, owner, m.cfg.InstanceID, micros(ttl)}, &token, &takenFrom)
		mine, fresh = err == nil, err == nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		args := []any{m.cfg.AppName, key, owner, m.cfg.InstanceID, micros(ttl), m.class, q != nil}
		if q != nil && !fast {
			// A waiting call on a key seen contended: its row decides (no
			// block of tokens is drawn, see queries.acquireRow); no row
			// when the key has none.
			err = m.grantRow(ctx, m.q.acquireRow, args[:6], &token, &mine, &fresh, &takenFrom, &us, &info.first)
		}
		if errors.Is(err, pgx.ErrNoRows) {
			err = m.grantRow(ctx, m.q.acquire, args, &token, &mine, &fresh, &takenFrom, &us, &info.first)
		}
		if err == nil && !(mine && fresh) {
			m.setHot(key, true)
		}
		if errors.Is(err, pgx.ErrNoRows) {
			m.setHot(key, true)
			return nil, attemptInfo{remaining: -1}, nil // held; nothing changed (no q)
		}
		if err != nil {
			return nil, attemptInfo{}, err
		}
		info.remaining = -1
		if us >= 0 {
			info.remaining = time.Duration(us) * time.Microsecond
		}
	}
	if err != nil {
		return nil, attemptInfo{}, err
	}
	if !mine || !fresh {
		// Held (by another instance, by a grant of this one, or designated
		// to this one: its NOTIFY hands it to the head waiter).
		return nil, info, nil
	}
	l := newLock(m, key, token, owner, sent, ttl)
	if ctx.Err() != nil {
		// Granted, but the caller gave up meanwhile: give it back.
		l.finish(stateReleased)
		_ = m.releaseRow(context.WithoutCancel(ctx), l)
		return nil, attemptInfo{}, ctx.Err()
	}
	m.mu.Lock()
	ok := m.state == mgrStarted && m.live && m.ownerID == owner
	// A lease shorter than this round trip may already have hit its local
	// deadline (finish ran, forget found nothing): do not register it then.
	// Lock order: m.mu, then l.mu (finish never holds l.mu while taking m.mu).
	if ok && l.held() {
		m.held[l] = struct{}{}
	}
	if q != nil {
		q.enqSent = time.Time{} // the grant took this instance out of the FIFO
	}
	m.mu.Unlock()
	if !ok {
		// The liveness session ended (or Close began) while the grant was in
		// flight: the lease belongs to a dead identity. Give it back.
		l.finish(stateLost)
		_ = m.releaseRow(context.WithoutCancel(ctx), l)
		m.mu.Lock()
		closed := m.state == mgrClosed
		m.mu.Unlock()
		if closed {
			return nil, attemptInfo{}, ErrClosed
		}
		return nil, attemptInfo{}, errNotLive
	}
	m.acquired.Add(1)
	attrs := []any{slog.String("lock_key", key), slog.Int64("token", token), slog.String("owner", m.cfg.InstanceID)}
	if takenFrom != nil {
		m.takeovers.Add(1)
		m.log.Info("lock taken over from an expired or dead holder", append(attrs, slog.String("previous_owner", *takenFrom))...)
	} else {
		m.log.Debug("lock acquired", attrs...)
	}
	return l, info, nil
}

// grantStatementTimeout bounds a granting statement once sent.
const grantStatementTimeout = 30 * time.Second

// grantRow runs a statement that may grant a lease. Waiting for a pooled
// connection follows ctx, but once sent the statement is not cancelled with
// ctx (only after grantStatementTimeout): a grant committed by the server
// after the client stopped listening would be held by nobody, and a
// reservation has no TTL to end it. Callers check ctx afterwards.
func (m *Manager) grantRow(ctx context.Context, sql string, args []any, dest ...any) error {
	conn, err := m.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grantStatementTimeout)
	defer cancel()
	return conn.QueryRow(sctx, sql, args...).Scan(dest...)
}

func micros(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	us := d.Microseconds()
	if us == 0 {
		us = 1
	}
	return us
}

// wait takes key, queueing behind this instance's other waiters for it.
// deadline zero means no deadline; ttl 0 grants a reservation. Only the
// head of the queue asks the database; a failed attempt leaves this
// instance in the key's FIFO, and a release (of any instance) that
// designates it hands the lease to the head through w.handoff (see adopt).
func (m *Manager) wait(ctx context.Context, key string, ttl time.Duration, deadline time.Time) (*Lock, error) {
	if err := m.usable(); err != nil {
		return nil, err
	}
	w, q := m.enqueue(key, ttl)
	var got *Lock
	defer func() { m.dequeue(q, w, got) }()

	var deadlineC <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		deadlineC = t.C
	}
	waitedOnce := false
	// handed receives a designation's outcome: a lock, or nil.
	handed := func(l *Lock) (*Lock, bool) {
		m.mu.Lock()
		w.claimed = false
		m.mu.Unlock()
		if l == nil || !m.fit(ctx, l, w.ttl) {
			return nil, false
		}
		got = l
		m.waited.Add(1)
		return l, true
	}
	// pause waits for d to pass, a wake-up of w, gen (nil: none), or a
	// designation; done: wait returns l, err.
	pause := func(d time.Duration, gen <-chan struct{}) (l *Lock, done bool, err error) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-w.wake:
		case <-gen:
		case l := <-w.handoff:
			if l, ok := handed(l); ok {
				return l, true, nil
			}
		case <-ctx.Done():
			return nil, true, ctx.Err()
		case <-deadlineC:
			return nil, true, errTimedOut
		}
		return nil, false, nil
	}
	for {
		// Wait to be the head of this instance's queue for the key.
		for !m.isHead(q, w) {
			// The poll is a backstop only: the head's departure wakes w.
			if l, done, err := pause(m.jitter(), nil); done {
				return l, err
			}
		}
		m.mu.Lock()
		gen, st, claimed := m.liveGen, m.state, w.claimed
		m.mu.Unlock()
		if st == mgrClosed {
			return nil, ErrClosed
		}
		sleep := m.jitter()
		if !claimed { // claimed: a designation is on its way to w
			l, info, err := m.attempt(ctx, key, ttl, q)
			if l != nil {
				got = l
				if waitedOnce {
					m.waited.Add(1)
				}
				return l, nil
			}
			switch {
			case errors.Is(err, ErrClosed):
				return nil, ErrClosed
			case ctx.Err() != nil:
				return nil, ctx.Err()
			case errors.Is(err, errNotLive):
				// wait for the liveness session (gen) or the poll
			case err != nil:
				m.log.Warn("lock attempt failed; retrying", slog.String("lock_key", key), slog.Any("error", err))
			default:
				m.contended.Add(1)
				waitedOnce = true
				if m.onQueued != nil {
					m.onQueued()
				}
				if info.first && info.remaining >= 0 {
					// First in line: take the lease when it expires (database
					// clock, plus a little) if nobody releases it first.
					sleep = min(info.remaining+time.Millisecond, sleep)
				}
			}
		}
		if l, done, err := pause(sleep, gen); done {
			return l, err
		}
	}
}

// goLive records s as the liveness session (the Manager started, unless
// Close began) and wakes every call waiting for one.
func (m *Manager) goLive(s *session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state == mgrNew {
		m.state = mgrStarted
	}
	m.live = true
	m.ownerID = s.ownerID
	m.livePID = s.pid
	m.signalLocked()
}

func (m *Manager) jitter() time.Duration {
	p := m.cfg.PollInterval
	return p*3/4 + time.Duration(rand.Int64N(int64(p/2)+1))
}

// --- backend implementation for *Lock ---

func (m *Manager) defaultTTL() time.Duration { return m.cfg.DefaultTTL }

func (m *Manager) closed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state == mgrClosed
}

// release is Lock.Release's backend: one statement that passes the lease
// to the first live instance in the key's FIFO (this one included: the
// releaser rejoins the FIFO's tail when it has local waiters) or frees it
// (see queries.release). A designation to this instance goes to its head
// waiter at once; one to another instance reaches it by its NOTIFY.
func (m *Manager) release(ctx context.Context, l *Lock) error {
	var rejoin any // ttl µs of the next local waiter; nil: none
	m.mu.Lock()
	if q := m.queues[l.key]; q != nil && len(q.waiters) > 0 && m.state == mgrStarted && m.live && m.ownerID == l.owner {
		rejoin = micros(q.waiters[0].ttl)
		if q.enqSent.IsZero() {
			q.enqSent = time.Now() // the statement may append this instance to the FIFO (see attempt)
		}
	}
	_, hot := m.hot[l.key]
	sent := time.Now()
	m.mu.Unlock()
	if rejoin == nil && !hot {
		// The uncontended release: one short statement when nobody is
		// queued; otherwise no row, and the designating release follows.
		var one int
		err := m.pool.QueryRow(ctx, m.q.releaseFree, m.cfg.AppName, l.key, l.token).Scan(&one)
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
	}
	if rejoin != nil && m.onQueued != nil {
		m.onQueued()
	}
	var (
		next      int32
		token, us int64
		freed     bool
		notified  *bool
	)
	err := m.grantRow(ctx, m.q.release, []any{m.cfg.AppName, l.key, l.token, l.owner, m.class, rejoin, m.cfg.InstanceID, m.channel, m.payload(l.key), false},
		&next, &token, &freed, &us, &notified)
	if errors.Is(err, pgx.ErrNoRows) {
		// A transaction holds the row (CheckTx, or an enqueue in flight), or
		// the lease moved on: a plain release, which never waits for CheckTx
		// (and rejoins the FIFO like this one).
		return m.releasePlain(ctx, l, rejoin)
	}
	if err != nil {
		return err
	}
	m.setHot(l.key, !freed)
	if freed {
		return nil // forget wakes this instance's head, if any
	}
	l.transferred.Store(true) // its end must not wake the local queue: the lease went to the FIFO
	if next == l.owner {
		m.adopt(l.key, token, l.owner, time.Duration(us)*time.Microsecond, sent, true)
	}
	return nil
}

// hotKeys bounds Manager.hot.
const hotKeys = 1024

// setHot records whether key was last seen contended (see Manager.hot).
func (m *Manager) setHot(key string, hot bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !hot {
		delete(m.hot, key)
		return
	}
	if len(m.hot) >= hotKeys {
		clear(m.hot)
	}
	m.hot[key] = struct{}{}
}

// payload names key in NOTIFY payloads: keys may be longer than a payload.
func (m *Manager) payload(key string) string {
	return strconv.FormatUint(keyHash(m.cfg.AppName, key), 16)
}

// releaseRow frees l's lease row if it still carries l's token, and NOTIFYs
// the instance first in the key's FIFO (and every instance when one running
// the previous release marked the key wanted).
func (m *Manager) releaseRow(ctx context.Context, l *Lock) error {
	return m.releasePlain(ctx, l, nil)
}

// releasePlain is releaseRow that also appends this instance to the key's
// FIFO when rejoin (the ttl µs of its next local waiter) is not nil.
func (m *Manager) releasePlain(ctx context.Context, l *Lock, rejoin any) error {
	var (
		broadcast bool
		notified  int64
	)
	err := m.pool.QueryRow(ctx, m.q.releasePlain, m.cfg.AppName, l.key, l.token, l.owner, m.class, m.channel, m.payload(l.key), false,
		rejoin, m.cfg.InstanceID).Scan(&broadcast, &notified)
	if errors.Is(err, pgx.ErrNoRows) {
		m.log.Debug("release: lease already gone", slog.String("lock_key", l.key), slog.Int64("token", l.token))
		return nil
	}
	return err
}

func (m *Manager) extend(ctx context.Context, l *Lock, ttl time.Duration) error {
	var one int
	err := m.pool.QueryRow(ctx, m.q.extend, m.cfg.AppName, l.key, l.token, micros(ttl), m.class).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotHeld
	}
	if err != nil {
		m.log.Warn("lease renewal failed", slog.String("lock_key", l.key), slog.Int64("token", l.token), slog.Any("error", err))
	}
	return err
}

func (m *Manager) checkTx(ctx context.Context, l *Lock, tx pgx.Tx) error {
	guard, err := commitGuard(tx)
	if err != nil {
		return err
	}
	var one int
	err = tx.QueryRow(ctx, m.q.checkTx, m.cfg.AppName, l.key, l.token, m.class).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotHeld
	}
	if err != nil {
		return err
	}
	if guard != nil {
		// The row lock just taken lives in a savepoint: a rollback to it (or
		// to an enclosing one) drops it while the transaction goes on. Check
		// again, from the outermost transaction, right before its COMMIT.
		app, key, token := m.cfg.AppName, l.key, l.token
		guard.BeforeCommit(func(ctx context.Context) error {
			var one int
			err := guard.QueryRow(ctx, m.q.recheckTx, app, key, token).Scan(&one)
			if errors.Is(err, pgx.ErrNoRows) {
				err = ErrNotHeld
			}
			if err != nil {
				return fmt.Errorf("advisorylock: commit fenced by CheckTx %q (token %d) in a savepoint: %w", key, token, err)
			}
			return nil
		})
	}
	return nil
}

func (m *Manager) forget(l *Lock, lost bool) {
	m.mu.Lock()
	delete(m.held, l)
	if q := m.queues[l.key]; q != nil && !l.transferred.Load() {
		q.wakeHead()
	}
	m.mu.Unlock()
	cause := ""
	if lost {
		cause = l.lostCause()
	}
	m.tel.ended(l.granted, cause)
	if lost {
		m.lostN.Add(1)
		m.log.Warn("lock lost", slog.String("lock_key", l.key), slog.Int64("token", l.token), slog.String("owner", m.cfg.InstanceID))
	} else {
		m.released.Add(1)
		m.log.Debug("lock released", slog.String("lock_key", l.key), slog.Int64("token", l.token))
	}
}
