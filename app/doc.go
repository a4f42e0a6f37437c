// Package app ties pgcoord's primitives into one application lifecycle, the
// way NocoBase's Application does: one [App] per instance owns a cache
// manager, pub/sub and sync messages, an event queue and a lock manager on one
// database, and runs [Plugin] hooks around them.
//
// # Lifecycle
//
// [New] validates the configuration and builds every component without I/O.
// [App.Start] connects, optionally migrates (Config.AutoMigrate), starts
// pub/sub, locks and the cache, calls every plugin's BeforeLoad then Load,
// subscribes plugins to their sync messages, starts the event queue, and calls
// AfterStart. [App.Stop] fixes NocoBase's order, where the queue outlived the
// database:
//
//  1. plugins' BeforeStop, in reverse order;
//  2. the event queue stops taking work and waits for running messages while
//     the database is still open;
//  3. sync messages, the cache manager (its near-caches listen through
//     pub/sub) and pub/sub close: no handler runs after this;
//  4. the instance deletes its row from the registry, then locks are
//     released (the liveness session ends);
//  5. the pool is closed if the App opened it.
//
// Stop is safe to call twice and before Start; a failing hook is logged and
// reported but never prevents the rest of the shutdown.
//
// Stop's ctx is the shutdown deadline. The queue waits for running messages
// until it, then cancels them and hands back, at once, those whose Process
// ignores its ctx (queue.StopGrace, 2 s, at most). Every other step gets a
// context of its own that ends [StopStepGrace] (1 s) after ctx: a step never
// inherits an expired context, and one that hangs is abandoned. So Stop
// returns at most queue.StopGrace + (plugins with BeforeStop + 6) ×
// StopStepGrace after ctx ends (8 s without such plugins), and only when every
// step hangs; a step that finishes costs only its own time.
//
// # Plugins
//
// A plugin is any type with a Name. It opts into hooks by implementing the
// optional interfaces [BeforeLoader], [Loader], [AfterStarter], [BeforeStopper]
// and [SyncMessageHandler]. Embedding [PluginBase] gives it
// [PluginBase.SendSyncMessage] and [PluginBase.SendSyncMessageTx]: a message
// sent by a plugin reaches the same plugin on every other instance of the app,
// and never reaches an instance that has stopped.
//
// # Poolers
//
// PgBouncer in transaction mode cannot carry LISTEN or session advisory locks.
// Point the pool at the pooler and set Config.DirectDatabaseURL (env
// PGCOORD_DIRECT_DATABASE_URL) to a direct connection string: the app opens a
// small second pool on it for pub/sub, sync messages, locks and the event
// queue, while the cache and your own queries go through the pooler. Start
// checks that a NOTIFY sent through the pool reaches a LISTEN connection and
// fails with [ErrListenUnsupported], which names the setting, when it does not.
//
// # Observability
//
// (docs/observability.md has the details.)
//
//   - Instance registry: Start registers the instance (host, pid, pgcoord
//     version, liveness session pid, a small stats snapshot: counters, the
//     listener lag and each cache's read counters, see [Instance.DecodeStats]) in the UNLOGGED
//     table instances, refreshes it every Config.HeartbeatInterval, and Stop
//     deletes it. [App.Instances] lists an app's instances; an instance whose
//     liveness session is gone (a killed process) shows Alive false at once
//     and its row is swept after three missed heartbeats.
//   - Named connections: every connection pgcoord opens carries
//     application_name pgcoord/<app>/<instance>/<role> (roles pool, direct,
//     listen, lock-liveness, queue-liveness, cache-wraplock, check; at most
//     63 bytes). A pool the user passes keeps its own name; a URL with an
//     application_name keeps it.
//   - OpenTelemetry (API only): Config.MeterProvider and
//     Config.TracerProvider (nil: the global ones) reach every component:
//     pgcoord.cache.*, pgcoord.listen.*, pgcoord.queue.*, pgcoord.lock.*
//     instruments, River's river.* (otelriver) and spans; trace context
//     travels in a pub/sub or sync message's headers and in a queue job's
//     metadata, so handlers on other instances join the publisher's trace.
//   - Health: [App.Health] reports each component (app, database, schema,
//     listen, locks, queue); [App.HealthHandler] serves it as JSON with
//     status 200 or 503 for readiness and liveness probes.
//   - One logger: Config.Logger (nil: slog.Default()) receives every
//     component's lines and River's, each with app, instance_id and
//     component; an outage's repeated warnings are folded (one line when it
//     starts, a repeat at most every 30 s with the suppressed count, one
//     INFO when it ends).
package app
