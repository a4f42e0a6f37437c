package app

import (
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/pgcache"
	"github.com/pgcoord/pgcoord/queue"
)

// Name is the app's name.
func (a *App) Name() string { return a.cfg.Name }

// InstanceID identifies this instance in the cluster.
func (a *App) InstanceID() string { return a.cfg.InstanceID }

// Logger is the app's logger, with app and instance attributes.
func (a *App) Logger() *slog.Logger { return a.logger }

// DB is the app's pool.
func (a *App) DB() *pgxpool.Pool { return a.pool }

// Cache is the default cache, named after the app (NocoBase's app.cache). It
// is nil before Start.
func (a *App) Cache() *pgcache.Cache {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cache
}

// CacheManager creates and looks up the app's caches.
func (a *App) CacheManager() *pgcache.Manager { return a.caches }

// PubSub is the app's cluster pub/sub.
func (a *App) PubSub() *listen.PubSub { return a.pubsub }

// SyncMessages is the app's sync-message manager.
func (a *App) SyncMessages() *listen.SyncMessages { return a.sync }

// EventQueue is the app's durable event queue.
func (a *App) EventQueue() *queue.EventQueue { return a.queue }

// Locks is the app's lock manager.
func (a *App) Locks() *advisorylock.Manager { return a.locks }
