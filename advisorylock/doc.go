// Package advisorylock gives every instance of a clustered application
// fenced, crash-safe locks on PostgreSQL: NocoBase's LockManager
// (acquire / runExclusive / tryAcquire, reservations, extend) with the
// guarantees NocoBase lacks.
//
// # Using it
//
// Each instance creates one [Manager] with [New] and calls [Manager.Start].
// [Manager.Acquire] waits for a key and returns a [Lock] whose lease ends
// after a TTL; [Manager.TryAcquire] fails at once (or after a wait) with a
// [*LockAcquireError] and otherwise returns a reservation with no expiry;
// [Manager.RunExclusive] waits, runs a function while renewing the lease,
// and releases. A [Lock] has [Lock.Release], [Lock.Extend], [Lock.Token],
// [Lock.CheckTx], [Lock.Done] and [Lock.RunExclusive]. Keys are namespaced
// by [Config.AppName]. [NewLocal] is the in-process implementation of the
// same [Locker] interface for single-process apps and tests.
//
// # Guarantees
//
//   - Mutual exclusion as recorded in Postgres: at any moment at most one
//     grant of a key is valid in the lease table. A holder's local view
//     (Done) can lag behind the table (a paused process learns late);
//     CheckTx and the token are authoritative.
//   - Fencing: [Lock.Token] strictly increases with every grant of a key and
//     is never reused, also across server crashes and restarts (each lease
//     row takes blocks of a non-cycling sequence; see below). [Lock.CheckTx] verifies in
//     the caller's transaction that the grant is still valid and blocks any
//     takeover until that transaction ends, so writes made in it cannot
//     interleave with the next holder's — also when CheckTx ran inside a
//     *txhooks.Tx savepoint that was rolled back afterwards (the commit is
//     then re-checked; a pgx savepoint is refused with [ErrSavepoint]; see
//     [Lock.CheckTx]). Resources outside the database can reject writes
//     whose token is below the highest they have seen.
//   - [Lock.Release] is idempotent and never frees a later holder's grant.
//   - [Lock.Done] closes when the grant ends: Release, expiry of its TTL
//     (measured conservatively on the local clock from the moment the lease
//     was set), detected takeover, or loss of the instance's liveness session.
//   - RunExclusive is never pre-empted by its TTL (the lease is renewed every
//     TTL/3), and its function's context is cancelled with cause
//     [ErrLockLost] as soon as the lease is known lost.
//   - Holding N locks costs N rows, not N connections: a Manager uses its pool
//     for short statements plus one dedicated connection.
//
// # Design and invariants
//
// The table locks(app, key, token, owner_id, owner, expires_at, ...) decides
// ownership (migration 00011, UNLOGGED). A grant is valid while
//
//	expires_at IS NULL OR expires_at > now()      (database clock; NULL = reservation)
//
// and its owner's liveness session is alive. Each Manager holds, on a
// dedicated connection opened at Start (same settings and
// application_name as its pool), the session advisory lock
// (class, owner_id), where owner_id comes from a non-cycling sequence and is
// never reused. That connection also LISTENs for releases. When the session
// ends — the process died, the connection was terminated, the server
// restarted — Postgres drops the advisory lock, and every lease naming that
// owner_id may be taken at once: a waiter's statement sees
// pg_try_advisory_xact_lock_shared(class, owner_id) succeed. A crashed holder
// therefore releases its locks immediately (at the waiters' next poll), not
// after its TTL; a hung holder loses them when its TTL passes.
//
// Acquisition is one statement, INSERT … ON CONFLICT (app, key) DO UPDATE
// that grants when the lease is free (expired or released or owner dead) and
// no live instance is queued ahead, and queues this instance otherwise. A
// waiting call on a key this instance saw contended runs the same decision
// as an UPDATE of the existing row (the INSERT path computes its new row,
// and so draws a token block, even when the key has a row). The conflicting
// row's lock serialises concurrent grants; the new token is taken after that
// lock is taken, so it exceeds the token it replaces. Tokens come in blocks
// (migration 16): a row draws a block of 1024 from the logged sequence
// lock_tokens (INCREMENT BY 1024) when it is created and when its block is
// used up (token = token_end), and every other grant takes token + 1. So a
// grant writes no WAL (the lease table is UNLOGGED): no commit on the grant
// path waits for a WAL flush. Blocks are disjoint, so no two keys share a
// token; a draw forces synchronous_commit on for its transaction, so after a
// crash (which empties the table) every new row's block is above every token
// handed out before. Release sets
// expires_at to -infinity only WHERE token = this grant's token. Renewal
// (Extend) updates expires_at only while the grant is still valid.
//
// A grant's DO UPDATE assigns the key column (to the same value), so it
// locks the row in FOR UPDATE strength and waits for the FOR KEY SHARE row
// lock taken by CheckTx; renewals and releases assign no key column and do
// not wait, so a holder's own transaction never blocks its renewals.
//
// Uncontended keys take shorter statements: unless this instance saw the
// key contended lately (a failed attempt, a designation), a grant first
// tries an UPDATE of the existing row that succeeds only when its lease is
// free (released or expired) and nobody is queued (it locks the row FOR
// UPDATE first, so it waits for CheckTx like every grant), and a release
// with no local waiter first tries an UPDATE that frees the lease only
// when nobody is queued. When either finds otherwise it changes nothing
// and the statement above decides, so the FIFO and every guarantee are the
// same; an uncontended acquire and release cost one short statement each.
//
// When the liveness session fails (read error, or a ping every
// [Config.HealthCheckInterval] that gets no answer within
// max(HealthCheckInterval, 5s)), the Manager declares every lock it holds
// lost (Done closes; others may already be taking them), reconnects with
// backoff under a new identity, and then serves new grants. A lock is
// registered only if the identity it was granted under is still current.
// After reconnecting, the new session ends the old server backend with
// pg_terminate_backend if it still holds the old identity's lock (a silent
// partition leaves it alive: no RST reached the server) and NOTIFYs every
// waiter. The liveness session also carries server-side timeouts
// (idle_session_timeout on PostgreSQL 14+, TCP keepalives,
// tcp_user_timeout), so that the server ends it by itself when its client
// goes silent and cannot come back.
//
// Waiters: the waiters of one instance for one key queue in FIFO order and
// only the head asks the database. Across instances the lease row holds a
// FIFO of the waiting instances (locks.queue, migration 00014): a head whose
// attempt finds the key held (or another instance first in line) joins its
// tail in that same statement, once per wait. A key is granted by an
// attempt only when it is free and no live instance is queued ahead.
//
// Handoff: Release does not just free a contended key. In one statement,
// under the row lock, it designates the first instance of the FIFO whose
// liveness session is alive (dead entries are dropped): the lease goes to it
// with a new token and the TTL it asked for, and only that instance is
// notified, on a channel of its own (payload: key hash, token, TTL), which
// hands the lease to its head waiter. Nobody else wakes or runs a statement;
// no attempt loses. A releasing instance that still has local waiters
// rejoins the tail in its release, so instances are served round-robin and
// local waiters in FIFO order; when it is alone in line the lease passes to
// its next waiter at once (Stats.Handoffs). The designated instance
// measures the lease from the send time of the statement that queued it
// (before the grant, so conservative); when less than half the TTL is left
// that way, or its head asks for another TTL, the head renews it first (one
// statement). A designation whose waiter has gone is released at once (it
// passes on). A designation never overtakes a transaction fenced by CheckTx
// (SKIP LOCKED): Release then frees the key plainly and notifies the first
// in line, whose grant waits for that transaction. [ForceRelease] is the
// same release from outside (an operator's force free). A waiter that gives
// up leaves the FIFO; the first in line alone acts on the lease's expiry;
// a jittered poll ([Config.PollInterval]) covers instances that died without
// a word (their leases are then free to the first live instance in line).
//
// Rows free for longer than [Config.Retention] are deleted by a sweeper in
// every instance (bounded batches, SKIP LOCKED).
//
// # Failure model
//
//   - Holder process dies: its session ends; waiters get the lock at their
//     next poll, well before the TTL.
//   - Holder hangs (GC pause, stuck I/O): the lease expires at its TTL on the
//     database clock, the next waiter gets a larger token; the hung holder's
//     CheckTx fails, its Release is a no-op, fenced writes with its token are
//     rejected. Its Done closes at its local deadline when it wakes. A
//     process that stops altogether (its liveness session silent too) also
//     loses its reservations, which have no TTL, when the server ends the
//     silent session (see "Silent partition": within H+2P on PostgreSQL 14+).
//   - Holder loses its database connections (closed or reset): its liveness
//     session ends, so others may take its locks at once; it closes every
//     Done as soon as it notices (immediately for a closed connection), and
//     in any case at the lease's TTL.
//   - Silent partition (the liveness flow goes quiet, no RST reaches either
//     side). With H = [Config.HealthCheckInterval] and P = max(H, 5s): the
//     holder declares every lock lost (Done closes) within H+P of the
//     silence (10s with the default H = 5s: 2×H). If it can reach the server
//     again, its new session ends the old backend at once, and the locks
//     are free for others right after its reconnect (waiters are woken by a
//     NOTIFY); measured with H = 1s: declared lost 5.4s after the freeze,
//     taken by another instance 0.4s later. If it cannot, the server ends
//     the silent session within H+2P (15s by default) through
//     idle_session_timeout (PostgreSQL 14+) or, when packets are really
//     dropped, TCP keepalives and tcp_user_timeout; before PostgreSQL 14 a
//     frozen but acknowledging path (a stuck proxy) is ended only by the
//     reconnect. A lease with a TTL is free at its TTL in any case. When
//     pg_terminate_backend is not permitted (EXECUTE revoked; it is allowed
//     for backends of the same role) the Manager logs a WARN and the
//     server's timeouts are the bound.
//   - Postgres restarts or fails over: every session ends, so every lease is
//     free; the UNLOGGED table may be emptied (nothing in it outlives the
//     sessions anyway). Every row created after that draws a new block
//     from the logged sequence, above every earlier token.
//   - Transaction-mode poolers (PgBouncer) break the liveness session and
//     LISTEN: connect the Manager's pool directly or in session mode.
//
// # Differences from NocoBase
//
// TTLs are time.Duration, not milliseconds; ttl 0 means [Config.DefaultTTL]
// (500 ms as in NocoBase). The TTL never pre-empts RunExclusive in either
// form (NocoBase's handle form does). A [Lock] is one grant: after Release
// it does not re-acquire (NocoBase's ILock.acquire does); take the key again
// to get a new grant and token. Keys are namespaced by app for you. Stale
// releasers are no-ops in both. NocoBase has no fencing tokens and its
// local adapter is single-process.
package advisorylock
