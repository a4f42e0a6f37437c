// Package dashboard is pgcoord's cluster dashboard: an [http.Handler] that an
// application mounts in its own server (under any prefix) or that
// `pgcoord dashboard` serves on its own. It shows the whole cluster's
// coordination state, read from the database every instance shares:
//
//   - Cluster: every instance of the instance registry joined with its
//     sessions (live or dead, host, pid, version, connections, uptime, last
//     heartbeat, last activity, counters and listener lag of its last
//     heartbeat), the schema version the
//     database is at and the one this build needs, the PostgreSQL version and
//     pg_notification_queue_usage().
//   - Channels: per channel message counts per minute over the last
//     [RateMinutes] minutes (an inline SVG chart), the latest messages
//     (payload preview, sender, age) and a live tail over Server-Sent Events
//     fed by the dashboard's own LISTEN, with each message's delivery lag to
//     the dashboard (database clock).
//   - Locks: held leases (key, holder, fencing token, TTL left, waiters, held
//     for), recent takeovers and lost leases (TTL passed, holder gone).
//   - Caches: per app and prefix entry counts, bytes, and expired entries the
//     sweeper has not deleted yet; each registered instance's hit rates per
//     cache (hits, misses, near-cache hits) from its last heartbeat.
//   - Queue: River UI (riverqueue.com/riverui) under /queue, on pgcoord's
//     River tables, with every River UI feature.
//
// Every page has a JSON twin under /api (see [Handler]).
//
// # Security
//
// The dashboard is read-only by default: every request whose method is not
// GET, HEAD or OPTIONS is refused with 403, River UI's included. With
// [Config.AllowActions] mutating requests (River UI's retry, cancel, delete,
// queue pause; the Locks page's "force free") pass, in order, through
// cross-origin protection ([http.CrossOriginProtection]: a request a browser
// sent from another origin is refused), [Config.ActionAuth] (the user's
// middleware; required with AllowActions) and, for the dashboard's own forms,
// a double-submit CSRF token. Every value read from the database reaches a
// page through html/template or, in the live tail, through textContent: a
// payload, channel name or lock key containing markup renders as text. The
// dashboard's own pages carry a Content-Security-Policy that allows scripts
// from the dashboard only. Authentication of readers is the embedding
// server's job: wrap the handler.
//
// # Lifecycle
//
// [NewHandler] starts nothing. The live tail opens one dedicated connection
// (application_name pgcoord/dashboard) when the first tail client connects
// and closes it when the last one leaves; [Handler.Close] ends every open
// tail stream. The dashboard never writes to the database except through an
// allowed action.
package dashboard
