package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/internal/connname"
	"github.com/pgcoord/pgcoord/internal/ident"
	"github.com/pgcoord/pgcoord/internal/lifecycle"
	"github.com/pgcoord/pgcoord/internal/obslog"
	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/migrations"
	"github.com/pgcoord/pgcoord/pgcache"
	"github.com/pgcoord/pgcoord/queue"
)

// ErrClosed is returned by Start after Stop. It is the one ErrClosed of
// pgcoord: the ErrClosed of listen, pgcache, queue and advisorylock each Is
// it, so errors.Is(err, app.ErrClosed) recognises any component's.
var ErrClosed = lifecycle.ErrClosed

// ErrAlreadyStarted is returned by Start when the App is starting or
// started. The ErrAlreadyStarted of listen, pgcache, queue and advisorylock
// each Is it.
var ErrAlreadyStarted = lifecycle.ErrAlreadyStarted

// Config configures an App. Name and one of Pool or DatabaseURL are needed;
// everything else has a default.
type Config struct {
	// Name namespaces every key, channel, queue and lock of this app, so
	// several apps share one database without crosstalk. Defaults to "main".
	Name string

	// Pool is the database pool. When nil, DatabaseURL is used to open one,
	// which Stop closes. A Pool passed in is never closed by the App.
	Pool        *pgxpool.Pool
	DatabaseURL string

	// DirectDatabaseURL, when set, opens a second, direct pool for what a
	// transaction-mode pooler (PgBouncer) cannot carry: pub/sub and sync
	// messages (LISTEN), locks (session advisory locks) and the event queue
	// (River's LISTEN notifier). The cache and Pool's other users keep going
	// through the pooler. Stop closes it. Defaults to none: everything uses Pool.
	DirectDatabaseURL string

	// InstanceID identifies this process in the cluster. Defaults to NewInstanceID().
	InstanceID string

	// Schema holds pgcoord's tables. Defaults to "pgcoord".
	Schema string

	// Plugins, in load order. Names must be unique and non-empty.
	Plugins []Plugin

	// AutoMigrate runs migrations.Up at Start.
	AutoMigrate bool

	// Logger receives the app's and every component's logs, River's
	// included. Defaults to slog.Default(). Every line carries app,
	// instance_id and component (app, listen, sync, pgcache, queue,
	// advisorylock, migrations); a burst of warnings from one component (a
	// database outage) is written as one line when it starts, a repeat at
	// most every 30 s with the count suppressed, and one INFO line when it
	// ends (see docs/observability.md).
	Logger *slog.Logger

	// MeterProvider and TracerProvider receive the components' metrics and
	// spans (pgcoord.* and River's river.*, listed in
	// docs/observability.md). A sub-config's own provider wins. Default to
	// the global otel.GetMeterProvider() / otel.GetTracerProvider(): no-ops
	// until the application installs an OpenTelemetry SDK.
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider

	// HeartbeatInterval is how often the instance refreshes its row in the
	// instance registry (see App.Instances) and sweeps dead instances' rows.
	// Defaults to DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration

	// Sub-configurations. AppName, InstanceID, Schema and Logger are filled
	// from the fields above; anything else set here is kept.
	Cache  *pgcache.ManagerConfig
	PubSub *listen.Config
	Sync   *listen.SyncConfig
	Queue  *queue.Config
	Lock   *advisorylock.Config

	// DefaultCache configures the default cache (App.Cache). Its Name is the
	// app's name. Defaults to a postgres-store cache with no TTL.
	DefaultCache *pgcache.CacheConfig
}

// App is one instance of a clustered application.
type App struct {
	cfg Config
	// base carries app and instance_id (an obslog handler); logger is
	// base with component app. Each component gets base with its own
	// component attribute.
	base     *slog.Logger
	logger   *slog.Logger
	pool     *pgxpool.Pool
	ownsPool bool
	// direct is the pool for session-level features (LISTEN, advisory
	// locks, River's notifier), opened from DirectDatabaseURL; nil means pool.
	direct *pgxpool.Pool

	pubsub *listen.PubSub
	sync   *listen.SyncMessages
	caches *pgcache.Manager
	cache  *pgcache.Cache
	queue  *queue.EventQueue
	locks  *advisorylock.Manager

	// reg is the registry's SQL; startedAt is this instance's registration
	// time, written by Start's register and then only by the heartbeat
	// goroutine, which Stop ends before it deregisters. heartbeatCancel and
	// heartbeatDone (guarded by mu) own that goroutine.
	reg             registrySQL
	startedAt       time.Time
	heartbeatCancel context.CancelFunc
	heartbeatDone   chan struct{}

	mu      sync.Mutex // guards state and subs
	state   state
	subs    []*listen.Subscription
	stopErr error
}

type state int

const (
	stateNew state = iota
	stateStarting
	stateStarted
	stateStopped
)

// New validates cfg and builds the app's components. It opens the pool when
// cfg.Pool is nil but does no other I/O.
func New(ctx context.Context, cfg Config) (*App, error) {
	shared := ident.Shared{AppName: &cfg.Name, InstanceID: &cfg.InstanceID, Schema: &cfg.Schema, Logger: &cfg.Logger, AppNameField: "Name"}
	shared.Defaults()
	if err := shared.Validate("Config"); err != nil {
		return nil, fmt.Errorf("app: %w", err)
	}
	if err := migrations.ValidateSchema(cfg.Schema); err != nil {
		return nil, fmt.Errorf("app: Config.Schema: %w", err)
	}
	if cfg.HeartbeatInterval < 0 {
		return nil, fmt.Errorf("app: Config.HeartbeatInterval %s is negative", cfg.HeartbeatInterval)
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	base := slog.New(obslog.New(cfg.Logger.Handler(), obslog.Config{},
		slog.String(obslog.KeyApp, cfg.Name), slog.String(obslog.KeyInstanceID, cfg.InstanceID)))
	seen := map[string]bool{}
	for i, p := range cfg.Plugins {
		if p == nil {
			return nil, fmt.Errorf("app: Config.Plugins[%d] is nil", i)
		}
		name := p.Name()
		if name == "" {
			return nil, fmt.Errorf("app: Config.Plugins[%d] (%T) has an empty name", i, p)
		}
		if seen[name] {
			return nil, fmt.Errorf("app: two plugins are named %q: plugin names must be unique", name)
		}
		seen[name] = true
	}
	if cfg.Pool == nil && cfg.DatabaseURL == "" {
		return nil, errors.New("app: Config.Pool or Config.DatabaseURL is required (env " + EnvDatabaseURL + ")")
	}

	a := &App{cfg: cfg, reg: newRegistrySQL(cfg.Schema), base: base, logger: componentLogger(base, "app")}
	if cfg.Pool != nil {
		a.pool = cfg.Pool
	} else {
		pool, err := a.openPool(ctx, cfg.DatabaseURL, connname.RolePool)
		if err != nil {
			return nil, fmt.Errorf("app: open pool: %w", err)
		}
		a.pool, a.ownsPool = pool, true
	}
	if cfg.DirectDatabaseURL != "" {
		direct, err := a.openPool(ctx, cfg.DirectDatabaseURL, connname.RoleDirect)
		if err != nil {
			a.closePools()
			return nil, fmt.Errorf("app: open Config.DirectDatabaseURL: %w", err)
		}
		a.direct = direct
	}
	if err := a.build(); err != nil {
		a.closePools()
		return nil, err
	}
	for _, p := range cfg.Plugins {
		if b, ok := p.(binder); ok {
			b.bind(a, p.Name())
		}
	}
	return a, nil
}

// componentLogger is base with component name.
func componentLogger(base *slog.Logger, name string) *slog.Logger {
	return base.With(slog.String(obslog.KeyComponent, name))
}

// openPool opens a pool on url whose connections are named
// pgcoord/<app>/<instance>/<role> unless url sets application_name.
func (a *App) openPool(ctx context.Context, url, role string) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	connname.SetDefault(pc.ConnConfig, a.cfg.Name, a.cfg.InstanceID, role)
	return pgxpool.NewWithConfig(ctx, pc)
}

// sessionPool is the pool for components that need session features.
func (a *App) sessionPool() *pgxpool.Pool {
	if a.direct != nil {
		return a.direct
	}
	return a.pool
}

// closePools closes the pools the app opened.
func (a *App) closePools() {
	if a.direct != nil {
		a.direct.Close()
	}
	if a.ownsPool {
		a.pool.Close()
	}
}
