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
//  4. locks are released;
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
// returns at most queue.StopGrace + (plugins with BeforeStop + 5) ×
// StopStepGrace after ctx ends (7 s without such plugins), and only when every
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
package app
