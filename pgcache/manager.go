package pgcache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/internal/broadcast"
	"github.com/pgcoord/pgcoord/internal/ident"
	"github.com/pgcoord/pgcoord/internal/lifecycle"
	"github.com/pgcoord/pgcoord/internal/schema"
	"github.com/pgcoord/pgcoord/listen"

	"github.com/pgcoord/pgcoord/internal/connname"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Store names.
const (
	// StorePostgres keeps entries in the UNLOGGED cache_entries table, shared
	// by every instance. The default.
	StorePostgres = "postgres"
	// StoreMemory keeps entries in this process only, in a bounded LRU.
	StoreMemory = "memory"
)

// Defaults of ManagerConfig.
const (
	// DefaultAppName is the app of a Manager configured without one
	// (NocoBase's main app is "main").
	DefaultAppName = ident.DefaultAppName
	// DefaultSweepInterval is how often the sweeper runs.
	DefaultSweepInterval = 30 * time.Second
	// DefaultSweepBatchSize bounds the rows of one sweep statement.
	DefaultSweepBatchSize = 1000
	// DefaultSweepMaxBatches bounds the batches of one sweep, so one sweep
	// of a huge backlog does not run for ever; the next sweep continues.
	DefaultSweepMaxBatches = 100
)

// ManagerConfig configures a Manager. The zero value is usable.
type ManagerConfig struct {
	// AppName namespaces every key ("app:prefix:key"): apps sharing a
	// database never see each other's entries. Defaults to DefaultAppName.
	AppName string
	// DefaultStore is the store of caches created without one. Defaults to
	// StorePostgres.
	DefaultStore string
	// Schema holds the cache_entries table. Defaults to schema.Default.
	Schema string
	// Logger receives the manager's logs. Defaults to slog.Default().
	Logger *slog.Logger
	// PubSub carries near-cache invalidations between instances. Needed only
	// by caches with a NearCache. The caller starts it (a near cache serves
	// nothing from memory while it is not healthy) and closes it after the
	// Manager.
	PubSub *listen.PubSub
	// SweepInterval is how often the sweeper runs after Start. Defaults to
	// DefaultSweepInterval.
	SweepInterval time.Duration
	// SweepBatchSize bounds the rows one sweep statement deletes. Defaults to
	// DefaultSweepBatchSize.
	SweepBatchSize int
	// MeterProvider receives the instruments of every cache of the Manager
	// (pgcoord.cache.*, see docs/observability.md). Defaults to
	// otel.GetMeterProvider() (a no-op until the application installs an SDK).
	MeterProvider metric.MeterProvider
	// TracerProvider receives a span per loader run of Wrap
	// (pgcoord.cache.load). Defaults to otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
}

func (c *ManagerConfig) withDefaults() ManagerConfig {
	var out ManagerConfig
	if c != nil {
		out = *c
	}
	ident.Shared{AppName: &out.AppName, Schema: &out.Schema, Logger: &out.Logger}.Defaults()
	if out.DefaultStore == "" {
		out.DefaultStore = StorePostgres
	}
	if out.SweepInterval <= 0 {
		out.SweepInterval = DefaultSweepInterval
	}
	if out.SweepBatchSize <= 0 {
		out.SweepBatchSize = DefaultSweepBatchSize
	}
	return out
}

func (c ManagerConfig) validate() error {
	if err := (ident.Shared{AppName: &c.AppName, Schema: &c.Schema, Logger: &c.Logger}).Validate("ManagerConfig"); err != nil {
		return err
	}
	if c.DefaultStore != StorePostgres && c.DefaultStore != StoreMemory {
		return fmt.Errorf("ManagerConfig.DefaultStore: %w: %q", ErrUnknownStore, c.DefaultStore)
	}
	return nil
}

// validateName checks an app name, cache name or prefix: stored as a column
// value, never as SQL text, so only length and encoding matter.
func validateName(s string) error {
	switch {
	case len(s) > 200:
		return fmt.Errorf("%d bytes, limit 200", len(s))
	case !utf8.ValidString(s):
		return fmt.Errorf("%q is not valid UTF-8", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return fmt.Errorf("%q contains a NUL byte", s)
		}
	}
	return nil
}

// Manager creates and owns the caches of one app on one instance, and runs
// the sweeper that deletes expired rows and enforces MaxEntries.
type Manager struct {
	pool   *pgxpool.Pool
	cfg    ManagerConfig
	sql    *pgSQL
	logger *slog.Logger

	// life is the Start/Close state; once Close began every call returns ErrClosed.
	life lifecycle.State

	mu     sync.Mutex // guards caches, stop, done
	caches map[string]*Cache
	// stop and done belong to the sweeper goroutine (nil when it is not
	// running); they are set once, when Start succeeds.
	stop context.CancelFunc
	done chan struct{}

	// swept counts expired rows deleted for prefixes this manager has no cache for.
	sweptOther atomic.Uint64
	// swept fires after every committed sweep batch that deleted rows.
	swept broadcast.Signal

	// wrapLocks holds the ClusterSingleFlight locks on a connection outside
	// the pool (see wraplock.go).
	wrapLocks *wrapLocks

	// near holds the registrations of this Manager's near caches (see
	// near_registry.go); nsql their statements.
	near *nearState
	nsql *nearSQL

	// tel holds the instruments (telemetry.go); its callback is
	// unregistered by Close.
	tel *telemetry
}

// NewManager returns a Manager for pool. It does not touch the database; call
// Start to run the sweeper. cfg may be nil.
func NewManager(pool *pgxpool.Pool, cfg *ManagerConfig) (*Manager, error) {
	if pool == nil {
		return nil, errors.New("pgcache: nil pool")
	}
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	table := pgx.Identifier{c.Schema, "cache_entries"}.Sanitize()
	s, ns := newPgSQL(table), newNearSQL(table)
	m := &Manager{
		nsql:      &ns,
		near:      newNearState(),
		pool:      pool,
		cfg:       c,
		sql:       &s,
		logger:    c.Logger,
		caches:    map[string]*Cache{},
		wrapLocks: newWrapLocks(wrapLockConnConfig(pool, c), c.Logger),
	}
	m.tel = newTelemetry(m, c.MeterProvider, c.TracerProvider)
	m.life.Errors(ErrClosed, ErrAlreadyStarted)
	return m, nil
}

// wrapLockConnConfig is the Wrap lock connection's configuration: the pool's,
// named (application_name) with role cache-wraplock.
func wrapLockConnConfig(pool *pgxpool.Pool, c ManagerConfig) *pgx.ConnConfig {
	cc := pool.Config().ConnConfig
	instance := ""
	if c.PubSub != nil {
		instance = c.PubSub.InstanceID()
	}
	connname.Set(cc, c.AppName, instance, connname.RoleWrapLock)
	return cc
}

// AppName is the app namespace of every key of this manager.
func (m *Manager) AppName() string { return m.cfg.AppName }

// Start checks that PostgreSQL answers and starts the sweeper. Caches work
// without Start; only expiry cleanup and MaxEntries eviction of the postgres
// store need it. Calling Start twice returns ErrAlreadyStarted; after Close
// it returns ErrClosed; after a failed Start it may be called again.
func (m *Manager) Start(ctx context.Context) error {
	if err := m.life.BeginStart(); err != nil {
		return err
	}
	err := m.pool.Ping(ctx)
	if err == nil {
		// Once per Start: an unmigrated or newer schema is a typed error
		// (migrations.ErrSchemaOutdated / ErrSchemaTooNew), not a raw SQL error.
		err = schema.Check(ctx, m.pool, m.cfg.Schema)
	}
	if err != nil {
		err = fmt.Errorf("pgcache: start: %w", err)
	}
	return m.life.EndStart(err, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		m.stop, m.done = cancel, make(chan struct{})
		go m.sweepLoop(sctx, m.done)
	})
}

// Close stops the sweeper, detaches near caches from the PubSub and makes
// every later call of the manager and its caches return ErrClosed. Entries in
// PostgreSQL stay. Close is safe twice and before Start.
func (m *Manager) Close(ctx context.Context) error {
	if first, _ := m.life.BeginStop(); !first {
		return nil
	}
	_ = m.tel.reg.Unregister()
	m.mu.Lock()
	stop, done := m.stop, m.done
	caches := make([]*Cache, 0, len(m.caches))
	for _, c := range m.caches {
		caches = append(caches, c)
	}
	m.mu.Unlock()
	var err error
	if stop != nil {
		stop()
		select {
		case <-done:
		case <-ctx.Done():
			err = fmt.Errorf("pgcache: close: sweeper still running: %w", ctx.Err())
		}
	}
	for _, c := range caches {
		c.close()
	}
	m.closeNear(ctx)
	m.wrapLocks.close(ctx)
	return err
}

// CreateCache creates a cache on this manager. Creating a name that exists
// returns the existing cache when the configuration is the same, and an
// error wrapping ErrCacheExists otherwise: a live cache is never replaced.
func (m *Manager) CreateCache(ctx context.Context, cfg CacheConfig) (*Cache, error) {
	if m.life.Stopped() {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	spec, err := cfg.spec(m.cfg.DefaultStore)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.life.Stopped() {
		return nil, ErrClosed
	}
	if c, ok := m.caches[spec.name]; ok {
		if c.spec != spec {
			return nil, fmt.Errorf("%w: %q", ErrCacheExists, spec.name)
		}
		return c, nil
	}
	c, err := newCache(ctx, m, spec)
	if err != nil {
		return nil, err
	}
	m.caches[spec.name] = c
	return c, nil
}

// Cache returns the cache created with that name, or a *CacheNotFoundError.
func (m *Manager) Cache(name string) (*Cache, error) {
	if m.life.Stopped() {
		return nil, ErrClosed
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.caches[name]
	if !ok {
		return nil, &CacheNotFoundError{Name: name}
	}
	return c, nil
}

// FlushAll resets every cache of this manager (each clears only its own
// entries; other apps and caches created elsewhere are untouched).
func (m *Manager) FlushAll(ctx context.Context) error {
	if m.life.Stopped() {
		return ErrClosed
	}
	m.mu.Lock()
	caches := make([]*Cache, 0, len(m.caches))
	for _, c := range m.caches {
		caches = append(caches, c)
	}
	m.mu.Unlock()
	var errs []error
	for _, c := range caches {
		if err := c.Reset(ctx); err != nil {
			errs = append(errs, fmt.Errorf("reset %q: %w", c.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// Stats sums the stats of every cache of this manager; ExpiredSwept also
// counts expired rows of this app deleted for caches this manager does not have.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	var s Stats
	for _, c := range m.caches {
		s = s.add(c.Stats())
	}
	s.ExpiredSwept += m.sweptOther.Load()
	return s
}

// Caches returns the caches of this manager, in name order.
func (m *Manager) Caches() []*Cache {
	out := m.cacheList()
	slices.SortFunc(out, func(a, b *Cache) int { return strings.Compare(a.Name(), b.Name()) })
	return out
}

func (m *Manager) cacheList() []*Cache {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Cache, 0, len(m.caches))
	for _, c := range m.caches {
		out = append(out, c)
	}
	return out
}
