package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/pgcoord/pgcoord/internal/obslog"
	"github.com/pgcoord/pgcoord/internal/schema"
	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/migrations"
)

// Start connects and starts the app: migrations (with AutoMigrate), the
// schema check (an error wrapping migrations.ErrSchemaOutdated,
// ErrSchemaTooNew or ErrServerTooOld names the versions and what to run), pub/sub,
// locks and the cache, plugins' BeforeLoad and Load, plugin sync-message
// subscriptions, the event queue, then plugins' AfterStart. When a step fails,
// everything already started is stopped again (Stop, including every
// plugin's BeforeStop) and the error returned; the App cannot be restarted.
func (a *App) Start(ctx context.Context) error {
	a.mu.Lock()
	switch a.state {
	case stateStopped:
		a.mu.Unlock()
		return ErrClosed
	case stateStarting, stateStarted:
		a.mu.Unlock()
		return ErrAlreadyStarted
	}
	a.state = stateStarting
	a.mu.Unlock()

	if err := a.start(ctx); err != nil {
		stopErr := a.Stop(context.WithoutCancel(ctx))
		return errors.Join(err, stopErr)
	}
	a.mu.Lock()
	a.state = stateStarted
	a.mu.Unlock()
	a.logger.InfoContext(ctx, "pgcoord: app started", slog.Int("plugins", len(a.cfg.Plugins)))
	return nil
}

func (a *App) start(ctx context.Context) error {
	if err := a.pool.Ping(ctx); err != nil {
		return fmt.Errorf("app: database not reachable: %w", err)
	}
	if a.cfg.AutoMigrate {
		if _, err := migrations.Up(ctx, a.pool, &migrations.Options{Schema: a.cfg.Schema, Logger: componentLogger(a.base, "migrations")}); err != nil {
			return fmt.Errorf("app: migrate: %w", err)
		}
	}
	// Once, before anything starts: an unmigrated, partly migrated or newer
	// schema is a typed error naming the versions, not a raw SQL error later.
	if err := schema.Check(ctx, a.pool, a.cfg.Schema); err != nil {
		return fmt.Errorf("app: %w", err)
	}
	if err := a.checkListen(ctx); err != nil {
		return err
	}
	if err := a.pubsub.Start(ctx); err != nil {
		return fmt.Errorf("app: start pub/sub: %w", err)
	}
	if err := a.locks.Start(ctx); err != nil {
		return fmt.Errorf("app: start locks: %w", err)
	}
	if err := a.caches.Start(ctx); err != nil {
		return fmt.Errorf("app: start cache: %w", err)
	}
	cache, err := a.caches.CreateCache(ctx, a.defaultCacheConfig())
	if err != nil {
		return fmt.Errorf("app: create default cache: %w", err)
	}
	a.mu.Lock()
	a.cache = cache
	a.mu.Unlock()

	for _, p := range a.cfg.Plugins {
		if h, ok := p.(BeforeLoader); ok {
			if err := h.BeforeLoad(ctx, a); err != nil {
				return fmt.Errorf("app: plugin %q BeforeLoad: %w", p.Name(), err)
			}
		}
	}
	for _, p := range a.cfg.Plugins {
		if h, ok := p.(Loader); ok {
			if err := h.Load(ctx, a); err != nil {
				return fmt.Errorf("app: plugin %q Load: %w", p.Name(), err)
			}
		}
	}
	for _, p := range a.cfg.Plugins {
		h, ok := p.(SyncMessageHandler)
		if !ok {
			continue
		}
		name := p.Name()
		sub, err := a.sync.Subscribe(ctx, pluginChannel(name), func(ctx context.Context, msg listen.Message) error {
			if a.stopping() {
				return nil // NocoBase's app.stopped guard; Close also stops delivery
			}
			return h.HandleSyncMessage(ctx, msg)
		})
		if err != nil {
			return fmt.Errorf("app: subscribe plugin %q to sync messages: %w", name, err)
		}
		a.mu.Lock()
		a.subs = append(a.subs, sub)
		a.mu.Unlock()
	}
	if err := a.queue.Start(ctx); err != nil {
		return fmt.Errorf("app: start event queue: %w", err)
	}
	// Registered once every component runs (the liveness pid is known),
	// before AfterStart hooks, which may list the instances.
	if err := a.register(ctx); err != nil {
		return err
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	a.mu.Lock()
	a.heartbeatCancel, a.heartbeatDone = cancel, done
	a.mu.Unlock()
	go a.runHeartbeat(hctx, done)
	for _, p := range a.cfg.Plugins {
		if h, ok := p.(AfterStarter); ok {
			if err := h.AfterStart(ctx, a); err != nil {
				return fmt.Errorf("app: plugin %q AfterStart: %w", p.Name(), err)
			}
		}
	}
	return nil
}

func (a *App) stopping() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state == stateStopped
}

// StopStepGrace is how long each shutdown step that follows the event queue
// may run past the end of Stop's ctx, so that it still cleans up: every such
// step (plugins' BeforeStop excepted: they run before the queue) gets a
// context of its own that ends StopStepGrace after Stop's ctx.
const StopStepGrace = time.Second

// Stop shuts the app down in the order described in the package
// documentation. It is safe to call twice (the second call returns the
// first's result) and before Start. Every step runs even when an earlier one
// failed; the errors are joined.
//
// Stop returns at most queue.StopGrace plus StopStepGrace per remaining step
// after ctx ends (the package documentation gives the bound). A step that
// ignores its context (a BeforeStop hook, a message's Process) is abandoned
// and left to finish in the background: later steps do not wait for it.
func (a *App) Stop(ctx context.Context) error {
	a.mu.Lock()
	if a.state == stateStopped {
		err := a.stopErr
		a.mu.Unlock()
		return err
	}
	wasStarted := a.state != stateNew
	a.state = stateStopped
	a.mu.Unlock()

	var errs []error
	report := func(what string, err error) {
		if err != nil && !isClosed(err) {
			a.logger.ErrorContext(context.WithoutCancel(ctx), "pgcoord: stop step failed", slog.String("step", what), slog.Any("error", err))
			errs = append(errs, fmt.Errorf("app: %s: %w", what, err))
		}
	}
	step := func(what string, run func(ctx context.Context) error) {
		sctx, cancel := stepContext(ctx)
		defer cancel()
		report(what, bounded(sctx, run))
	}
	if wasStarted {
		for _, p := range slices.Backward(a.cfg.Plugins) {
			if h, ok := p.(BeforeStopper); ok {
				step(fmt.Sprintf("plugin %q BeforeStop", p.Name()), func(ctx context.Context) error {
					return safeHook(func() error { return h.BeforeStop(ctx, a) })
				})
			}
		}
	}
	// The queue bounds its own overrun (queue.StopGrace) and reports ctx's
	// error when it had to cancel or abandon messages.
	report("stop event queue", a.queue.Stop(ctx))
	step("close sync messages", a.sync.Close)
	// The cache before pub/sub: near-caches unsubscribe from it.
	step("close cache", a.caches.Close)
	step("close pub/sub", a.pubsub.Close)
	a.mu.Lock()
	hbCancel, hbDone := a.heartbeatCancel, a.heartbeatDone
	a.mu.Unlock()
	if hbCancel != nil {
		hbCancel()
		<-hbDone
		step("deregister instance", a.deregister)
	}
	step("release locks", a.locks.Close)
	// pgxpool's Close waits for every acquired connection, which an abandoned
	// Process may hold: bounded like the other steps.
	step("close pools", func(context.Context) error { a.closePools(); return nil })
	err := errors.Join(errs...)
	a.mu.Lock()
	a.stopErr = err
	a.mu.Unlock()
	if wasStarted {
		a.logger.InfoContext(ctx, "pgcoord: app stopped")
	}
	// Bursts still open end now, with their closing lines, and no timer
	// outlives the App.
	obslog.Flush(a.base.Handler())
	return err
}

// stepContext returns a shutdown step's context: it carries ctx's values and
// ends StopStepGrace after ctx ends (at once plus the grace when ctx has
// already ended), so that a step after the deadline still cleans up, within
// a bound.
func stepContext(ctx context.Context) (context.Context, context.CancelFunc) {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var mu sync.Mutex
	var timer *time.Timer
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		timer = time.AfterFunc(StopStepGrace, cancel)
		mu.Unlock()
	})
	return sctx, func() {
		stop()
		mu.Lock()
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		cancel()
	}
}

// bounded runs fn(ctx) and returns its error, or ctx's error when ctx ends
// first; fn then goes on in the background and its result is dropped.
func bounded(ctx context.Context, fn func(ctx context.Context) error) error {
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("abandoned (still running in the background): %w", ctx.Err())
	}
}

func safeHook(fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return fn()
}
