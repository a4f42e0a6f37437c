package app

import (
	"errors"
	"fmt"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/pgcache"
	"github.com/pgcoord/pgcoord/queue"
)

// build creates every component from the sub-configs, filling the shared
// fields from Config; each component logs through the app's logger with its
// own component attribute (River through the queue's). The caller's sub-config structs are copied, never changed.
func (a *App) build() error {
	c := a.cfg
	var err error

	ps := copyOf(c.PubSub)
	ps.AppName, ps.InstanceID, ps.Schema, ps.Logger = c.Name, c.InstanceID, c.Schema, componentLogger(a.base, "listen")
	ps.MeterProvider, ps.TracerProvider = c.providers(ps.MeterProvider, ps.TracerProvider)
	if a.pubsub, err = listen.New(a.sessionPool(), &ps); err != nil {
		return fmt.Errorf("app: pub/sub: %w", err)
	}

	sc := copyOf(c.Sync)
	if sc.Logger == nil {
		sc.Logger = componentLogger(a.base, "sync")
	}
	if a.sync, err = listen.NewSyncMessages(a.pubsub, &sc); err != nil {
		return fmt.Errorf("app: sync messages: %w", err)
	}

	mc := copyOf(c.Cache)
	mc.AppName, mc.Schema, mc.Logger, mc.PubSub = c.Name, c.Schema, componentLogger(a.base, "pgcache"), a.pubsub
	mc.MeterProvider, mc.TracerProvider = c.providers(mc.MeterProvider, mc.TracerProvider)
	if a.caches, err = pgcache.NewManager(a.pool, &mc); err != nil {
		return fmt.Errorf("app: cache: %w", err)
	}

	qc := copyOf(c.Queue)
	qc.AppName, qc.InstanceID, qc.Schema, qc.Logger = c.Name, c.InstanceID, c.Schema, componentLogger(a.base, "queue")
	qc.MeterProvider, qc.TracerProvider = c.providers(qc.MeterProvider, qc.TracerProvider)
	if a.queue, err = queue.New(a.sessionPool(), &qc); err != nil {
		return fmt.Errorf("app: event queue: %w", err)
	}

	lc := copyOf(c.Lock)
	lc.AppName, lc.InstanceID, lc.Schema, lc.Logger = c.Name, c.InstanceID, c.Schema, componentLogger(a.base, "advisorylock")
	lc.MeterProvider, lc.TracerProvider = c.providers(lc.MeterProvider, lc.TracerProvider)
	if a.locks, err = advisorylock.New(a.sessionPool(), &lc); err != nil {
		return fmt.Errorf("app: locks: %w", err)
	}
	return nil
}

// defaultCacheConfig is the default cache's configuration, named after the app.
func (a *App) defaultCacheConfig() pgcache.CacheConfig {
	var cc pgcache.CacheConfig
	if a.cfg.DefaultCache != nil {
		cc = *a.cfg.DefaultCache
	}
	cc.Name = a.cfg.Name
	return cc
}

// isClosed reports whether err only says a component was already closed.
func isClosed(err error) bool {
	return errors.Is(err, ErrClosed)
}

// providers returns a sub-config's providers, each defaulting to the App's.
func (c Config) providers(mp metric.MeterProvider, tp trace.TracerProvider) (metric.MeterProvider, trace.TracerProvider) {
	if mp == nil {
		mp = c.MeterProvider
	}
	if tp == nil {
		tp = c.TracerProvider
	}
	return mp, tp
}

// copyOf returns a copy of *p, or the zero config when p is nil, so that
// build never changes a caller's sub-config.
func copyOf[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}
