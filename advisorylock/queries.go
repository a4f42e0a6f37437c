package advisorylock

import (
	"hash/fnv"
	"strconv"

	"github.com/jackc/pgx/v5"
)

// queries holds every statement, built once at New from the validated schema.
// Parameters are always $n; the only interpolated names are pgx-sanitized
// identifiers of pgcoord's own objects.
//
// Liveness test used below: pg_try_advisory_xact_lock_shared(class, owner_id)
// succeeds only when no session holds the owner's identity lock exclusively,
// i.e. when the owner's liveness session has ended. (When it succeeds it holds
// a shared lock on a dead identity until the end of the transaction: harmless,
// identities are never reused.) It is O(1), unlike a scan of pg_locks.
type queries struct {
	acquire, release, releasePlain, leave, releaseAll, extend, checkTx, recheckTx, sweep string
	acquireFree, releaseFree, acquireRow                                                 string
	newOwner, lockOwner, listen, sessionTimeouts, endOldSession, endOldSession13         string
	keyOfToken                                                                           string
}

// firstLive is the index (1-based) of the first entry of the owner_id array
// arr whose liveness session is alive, or NULL when none is. It is an
// expression on the row the statement has locked, so it sees the FIFO as of
// that row lock. class is the identity class parameter.
func firstLive(arr, class string) string {
	return `(SELECT q.i FROM unnest(` + arr + `) WITH ORDINALITY AS q(o, i)
 WHERE NOT pg_try_advisory_xact_lock_shared(` + class + `, q.o) ORDER BY q.i LIMIT 1)`
}

// tokenBlock is the number of fencing tokens a lease row takes from the
// lock_tokens sequence at a time: the sequence's increment (migration 16).
const tokenBlock = 1024

// buildQueries builds the statements for schema and channel. block is the
// size of a row's block of tokens: tokenBlock, or a divisor of it in tests
// (a smaller block only draws more often).
func buildQueries(schema, channel string, block int64) queries {
	locks := pgx.Identifier{schema, "locks"}.Sanitize()
	// The schema is validated ([a-z_][a-z0-9_]*), so the sanitized name has no quote to escape.
	tokens := "'" + pgx.Identifier{schema, "lock_tokens"}.Sanitize() + "'"
	// free: the lease of row l is free (released, expired, or its owner's session gone).
	free := func(class string) string {
		return `(l.expires_at <= now() OR pg_try_advisory_xact_lock_shared(` + class + `, l.owner_id))`
	}
	remaining := `CASE WHEN l.expires_at IS NULL THEN -1
               WHEN l.expires_at <= now() THEN 0
               ELSE greatest(0, floor(extract(epoch FROM l.expires_at - now()) * 1000000))::bigint END`
	// draw takes a new block of tokens: the sequence's next value is its
	// first token. A crash empties the lease table, and every row created
	// after it draws a block above every block drawn before: that needs the
	// commit of a nextval that WAL-logs the sequence to wait for the flush,
	// so draw turns synchronous_commit back on for its (rare) transaction
	// when the session turned it off.
	draw := `(SELECT nextval(` + tokens + `) FROM (SELECT CASE WHEN current_setting('synchronous_commit') = 'off'
        THEN set_config('synchronous_commit', 'on', true) END) c)`
	last := strconv.FormatInt(block-1, 10)
	// drawIf is, for a grant (cond) on row l, the first token of a new block
	// when the row's block is used up (or the row predates migration 16:
	// token_end 0), else NULL. It is column b of the subquery d below.
	drawIf := func(cond string) string {
		return `CASE WHEN ` + cond + ` AND l.token >= l.token_end THEN ` + draw + ` END`
	}
	// grantTokens is the new (token, token_end) of row l for a grant (cond):
	// the next token of its block, or the first of a new one. Under the row
	// lock, so a grant's token exceeds the one it replaces; blocks are
	// disjoint, so no other key ever has it. No grant: unchanged.
	grantTokens := func(cond string) string {
		return `CASE WHEN ` + cond + ` THEN coalesce(d.b, l.token + 1) ELSE l.token END, coalesce(d.b + ` + last + `, l.token_end)`
	}
	ttl := `CASE WHEN $5::bigint > 0 THEN now() + $5::bigint * interval '1 microsecond' END`
	// enqueue is the SET list of acquire and acquireRow on the existing row
	// l ($1 app, $2 key, $3 owner_id, $4 owner, $5 ttl µs, $6 class): grant
	// (d.g) when the lease is free and no live instance is queued ahead of
	// this one (d.f: the first live entry of the FIFO; dead entries before
	// it are dropped); otherwise append this instance to the FIFO (once).
	enqueue := `(token, token_end, owner_id, owner, expires_at, wanted_by, taken_from, acquired_at, updated_at,
     queue, queue_ttl, queue_name) = (
    SELECT ` + grantTokens("d.g") + `,
           CASE WHEN d.g THEN $3::int4 ELSE l.owner_id END,
           CASE WHEN d.g THEN $4::text ELSE l.owner END,
           CASE WHEN d.g THEN ` + ttl + ` ELSE l.expires_at END,
           CASE WHEN d.g AND l.wanted_by = $3 THEN 0 ELSE l.wanted_by END,
           CASE WHEN NOT d.g THEN l.taken_from WHEN l.expires_at = '-infinity' THEN NULL ELSE l.owner END,
           CASE WHEN d.g THEN now() ELSE l.acquired_at END,
           now(),
           CASE WHEN d.g THEN l.queue[d.f + 1:] WHEN $3 = ANY(l.queue[d.f:]) THEN l.queue[d.f:] ELSE l.queue[d.f:] || $3::int4 END,
           CASE WHEN d.g THEN l.queue_ttl[d.f + 1:] WHEN $3 = ANY(l.queue[d.f:]) THEN l.queue_ttl[d.f:] ELSE l.queue_ttl[d.f:] || $5::bigint END,
           CASE WHEN d.g THEN l.queue_name[d.f + 1:] WHEN $3 = ANY(l.queue[d.f:]) THEN l.queue_name[d.f:] ELSE l.queue_name[d.f:] || $4::text END
    FROM (SELECT e.f, e.g, ` + drawIf("e.g") + ` AS b
          FROM (SELECT s.f, ` + free("$6::int4") + ` AND (l.queue[s.f] IS NULL OR l.queue[s.f] = $3) AS g
                FROM (SELECT coalesce(` + firstLive("l.queue", "$6::int4") + `, cardinality(l.queue) + 1) AS f) s) e) d)`
	// acquired is the RETURNING list of acquire and acquireRow.
	acquired := `l.token,
          l.owner_id = $3 AND (l.expires_at IS NULL OR l.expires_at > now()),
          l.acquired_at = now(),
          l.taken_from,
          ` + remaining + `,
          l.queue[1] IS NOT DISTINCT FROM $3`
	owners := "'" + pgx.Identifier{schema, "lock_owners"}.Sanitize() + "'"
	return queries{
		// $1 app, $2 key, $3 owner_id, $4 owner, $5 ttl in µs (0: no expiry),
		// $6 identity class, $7 enqueue (false: a single attempt, row unchanged
		// when not granted).
		//
		// Grants when the key has no row, or its lease is free (released,
		// expired, or its owner's session is gone) and no live instance is
		// queued ahead of this one (d.f: the first live entry of the FIFO;
		// dead entries before it are dropped). Otherwise, with $7, it appends
		// this instance to the FIFO (once). (wanted_by is only kept: instances
		// of the previous release mark it; see docs/locks.md, rolling upgrade.)
		// ON CONFLICT DO UPDATE takes the row lock before SET is evaluated, so
		// the FIFO, the lease and the designation made by a concurrent release
		// are seen as of that lock: an enqueue and a release are ordered. The
		// update-path token is drawn after that lock, so a grant's token is
		// larger than the token it replaces. (The insert-path token is drawn
		// before; it can only lose to a newer grant if the row was deleted in
		// between, which the sweeper does only after Retention of no activity
		// and with an empty FIFO.)
		//
		// RETURNING: the row's token; mine: the valid lease is this
		// instance's; fresh: granted by this statement (acquired_at is the
		// transaction's start; a designation made by another transaction
		// started no later than this one, so this statement's send time is a
		// conservative start of its lease either way); taken_from; the
		// lease's remaining µs (-1: none); first: this instance is first in
		// line.
		acquire: `INSERT INTO ` + locks + ` AS l (app, key, token, token_end, owner_id, owner, expires_at)
SELECT $1::text, $2::text, n.t, n.t + ` + last + `, $3::int4, $4::text, ` + ttl + `
FROM (SELECT ` + draw + ` AS t) n
ON CONFLICT (app, key) DO UPDATE SET
    key = EXCLUDED.key, -- same value: only makes the row lock FOR UPDATE strength (see checkTx)
    ` + enqueue + `
WHERE $7::bool OR (` + free("$6::int4") + ` AND coalesce(l.queue[` + firstLive("l.queue", "$6::int4") + `] = $3, true))
RETURNING ` + acquired,

		// acquire on an existing row ($1-$6 as there; it always enqueues):
		// the same decision without the INSERT path, whose new row draws a
		// block of tokens even when the key has a row (the row to insert is
		// computed before the conflict is found). No row when the key has
		// none (then acquire). o locks the row FOR UPDATE: a grant waits for
		// CheckTx's FOR KEY SHARE, as acquire's ON CONFLICT (assigning the
		// key) does.
		acquireRow: `UPDATE ` + locks + ` AS l SET ` + enqueue + `
FROM (SELECT 1 FROM ` + locks + ` WHERE app = $1 AND key = $2 FOR UPDATE) o
WHERE l.app = $1 AND l.key = $2
RETURNING ` + acquired,

		// $1 app, $2 key, $3 owner_id, $4 owner, $5 ttl in µs (0: no expiry).
		// The uncontended grant (see Manager.attempt): the key's row exists,
		// its lease was released or has expired, and nobody is queued. It
		// makes the same grant as acquire on that row (new token drawn under
		// the row lock) and nothing else; no row when any condition fails
		// (then acquire decides). A lease of a dead owner that has not
		// expired is left to acquire. o locks the row FOR UPDATE, so the
		// grant waits for CheckTx's FOR KEY SHARE like every grant (a plain
		// UPDATE that assigns the key its own value is not a key update: it
		// would not wait; acquire's ON CONFLICT locks by the columns set).
		acquireFree: `UPDATE ` + locks + ` AS l SET
    (token, token_end) = (SELECT ` + grantTokens("true") + ` FROM (SELECT ` + drawIf("true") + ` AS b) d),
    owner_id = $3, owner = $4,
    expires_at = ` + ttl + `,
    wanted_by = CASE WHEN l.wanted_by = $3 THEN 0 ELSE l.wanted_by END,
    taken_from = CASE WHEN l.expires_at = '-infinity' THEN NULL ELSE l.owner END,
    acquired_at = now(), updated_at = now()
FROM (SELECT 1 FROM ` + locks + ` WHERE app = $1 AND key = $2 FOR UPDATE) o
WHERE l.app = $1 AND l.key = $2 AND l.expires_at <= now() AND cardinality(l.queue) = 0
RETURNING l.token, l.taken_from`,

		// $1 app, $2 key, $3 token. The uncontended release (see
		// Manager.release): frees the lease when nobody is queued for it and
		// no instance of the previous release marked it wanted, so there is
		// no one to designate or notify. Like releasePlain it assigns no key
		// column (it never waits for CheckTx); behind a concurrent enqueue it
		// sees the enqueued row and returns none (then release decides).
		releaseFree: `UPDATE ` + locks + ` AS l SET expires_at = '-infinity', last_wanted = 0, updated_at = now()
WHERE l.app = $1 AND l.key = $2 AND l.token = $3 AND cardinality(l.queue) = 0 AND l.wanted_by = 0
RETURNING 1`,

		// $1 app, $2 key, $3 token being released (NULL: whichever grant holds
		// the key: ForceRelease), $4 releasing owner_id (0: none), $5 class,
		// $6 ttl µs of the releaser's next local waiter (NULL: it has none),
		// $7 releaser's instance name, $8 channel, $9 payload (key hash),
		// $10 only a lease not released yet (ForceRelease).
		//
		// Designates the next holder in the same statement: the first live
		// entry of the FIFO (the releaser itself appended at the tail first
		// when it has local waiters and is not queued yet: instances are
		// served round-robin) gets the lease with the TTL it asked for and a
		// new token, leaves the FIFO, and is the only instance notified (on
		// its own channel; never the releaser, which takes a designation to
		// itself from the returned row). Dead entries before it are dropped.
		// No live entry: a plain free (expires_at -infinity), and one
		// broadcast NOTIFY when an instance of the previous release marked
		// the key wanted.
		//
		// o takes the row lock FOR UPDATE (a designation is a grant: it
		// conflicts with CheckTx's FOR KEY SHARE) with SKIP LOCKED: while any
		// transaction holds the row (the releasing holder's own CheckTx
		// transaction, still open, included; or a concurrent enqueue) no row
		// is returned and the caller falls back to releasePlain, which never
		// waits for a fenced transaction. The new token is drawn under the
		// row lock, so it exceeds the released one.
		release: `UPDATE ` + locks + ` AS l SET
    (token, token_end, owner_id, owner, expires_at, taken_from, acquired_at, updated_at,
     wanted_by, last_wanted, queue, queue_ttl, queue_name) = (
    SELECT ` + grantTokens("d.n IS NOT NULL") + `,
           coalesce(d.q[d.n], l.owner_id),
           coalesce(d.qn[d.n], l.owner),
           CASE WHEN d.n IS NULL THEN '-infinity'::timestamptz
                WHEN d.qt[d.n] = 0 THEN NULL
                ELSE now() + d.qt[d.n] * interval '1 microsecond' END,
           CASE WHEN d.n IS NULL THEN l.taken_from END,
           CASE WHEN d.n IS NULL THEN l.acquired_at ELSE now() END,
           now(),
           CASE WHEN d.n IS NULL THEN 0 ELSE l.wanted_by END,
           CASE WHEN d.n IS NULL THEN l.wanted_by ELSE 0 END,
           coalesce(d.q[d.n + 1:], '{}'), coalesce(d.qt[d.n + 1:], '{}'), coalesce(d.qn[d.n + 1:], '{}')
    FROM (SELECT d0.*, ` + drawIf("d0.n IS NOT NULL") + ` AS b
          FROM (SELECT e.q, e.qt, e.qn, ` + firstLive("e.q", "$5::int4") + ` AS n
          FROM (SELECT CASE WHEN $6::bigint IS NULL OR $4 = ANY(l.queue) THEN l.queue ELSE l.queue || $4::int4 END AS q,
                       CASE WHEN $6::bigint IS NULL OR $4 = ANY(l.queue) THEN l.queue_ttl ELSE l.queue_ttl || $6::bigint END AS qt,
                       CASE WHEN $6::bigint IS NULL OR $4 = ANY(l.queue) THEN l.queue_name ELSE l.queue_name || $7::text END AS qn) e) d0) d)
FROM (SELECT 1 FROM ` + locks + ` WHERE app = $1 AND key = $2 AND token = coalesce($3::bigint, token)
      AND (NOT $10::bool OR expires_at IS DISTINCT FROM '-infinity')
      FOR UPDATE SKIP LOCKED) o
WHERE l.app = $1 AND l.key = $2 AND l.token = coalesce($3::bigint, l.token)
RETURNING l.owner_id, l.token, l.expires_at IS NOT DISTINCT FROM '-infinity',
          CASE WHEN l.expires_at IS NULL OR l.expires_at = '-infinity' THEN 0
               ELSE floor(extract(epoch FROM l.expires_at - now()) * 1000000)::bigint END,
          CASE WHEN l.expires_at IS NOT DISTINCT FROM '-infinity' THEN
                    l.last_wanted NOT IN (0, $4) AND pg_notify($8, $9)::text IS NOT NULL
               WHEN l.owner_id <> $4 THEN
                    pg_notify($8 || '_' || l.owner_id, $9 || ':' || l.token || ':' ||
                        CASE WHEN l.expires_at IS NULL THEN 0 ELSE floor(extract(epoch FROM l.expires_at - now()) * 1000000)::bigint END)::text IS NOT NULL
          END`,

		// $1 app, $2 key, $3 token (NULL: any), $4 releasing owner_id, $5
		// class, $6 channel, $7 payload, $8 only a lease not released yet,
		// $9 ttl µs of the releaser's next local waiter (NULL: none), $10
		// releaser's instance name. The fallback of release when the row
		// is held by a transaction: frees the lease (assigning no key column,
		// it does not wait for CheckTx's FOR KEY SHARE), appends the releaser
		// to the FIFO when it has local waiters and is not queued (its turn is
		// kept, as in release: its next waiter's own attempt would wait for
		// that transaction and every statement queued on the row), NOTIFYs
		// the first live queued instance ("<hash>:0": try now; its acquire
		// waits for that transaction as a grant must) and, as before, every
		// instance when one of the previous release marked the key wanted.
		releasePlain: `UPDATE ` + locks + ` AS l
SET expires_at = '-infinity', last_wanted = l.wanted_by, wanted_by = 0, updated_at = now(),
    (queue, queue_ttl, queue_name) = (
        SELECT CASE WHEN j THEN l.queue || $4::int4 ELSE l.queue END,
               CASE WHEN j THEN l.queue_ttl || $9::bigint ELSE l.queue_ttl END,
               CASE WHEN j THEN l.queue_name || $10::text ELSE l.queue_name END
        FROM (SELECT $9::bigint IS NOT NULL AND NOT $4 = ANY(l.queue) AS j) r)
WHERE l.app = $1 AND l.key = $2 AND l.token = coalesce($3::bigint, l.token)
  AND (NOT $8::bool OR l.expires_at IS DISTINCT FROM '-infinity')
RETURNING l.last_wanted NOT IN (0, $4) AND pg_notify($6, $7)::text IS NOT NULL,
          (SELECT count(pg_notify($6 || '_' || l.queue[n.i], $7 || ':0'))
           FROM (SELECT ` + firstLive("l.queue", "$5::int4") + ` AS i) n WHERE n.i IS NOT NULL)`,

		// $1 app, $2 key, $3 owner_id, $4 class, $5 channel, $6 payload. Takes
		// this instance out of the key's FIFO (its last local waiter gave up)
		// and, when the lease is free, NOTIFYs the instance now first in line.
		leave: `UPDATE ` + locks + ` AS l SET (queue, queue_ttl, queue_name) = (
    SELECT coalesce(array_agg(u.o ORDER BY u.i), '{}'), coalesce(array_agg(u.t ORDER BY u.i), '{}'),
           coalesce(array_agg(u.n ORDER BY u.i), '{}')
    FROM unnest(l.queue, l.queue_ttl, l.queue_name) WITH ORDINALITY AS u(o, t, n, i)
    WHERE u.o <> $3)
WHERE l.app = $1 AND l.key = $2 AND $3 = ANY(l.queue)
RETURNING (SELECT count(pg_notify($5 || '_' || l.queue[n.i], $6 || ':0'))
           FROM (SELECT ` + firstLive("l.queue", "$4::int4") + ` AS i) n
           WHERE n.i IS NOT NULL AND ` + free("$4::int4") + `)`,

		// $1 app, $2 token, $3 owner_id. The key of a grant designated to
		// this instance that no local waiter took (the NOTIFY names a hash).
		keyOfToken: `SELECT key FROM ` + locks + ` WHERE app = $1 AND token = $2 AND owner_id = $3`,

		// $1 app, $2 keys, $3 tokens, $4 owner_id, $5 channel. Releases many
		// grants in one statement (Close); one NOTIFY ("*": wake every
		// waiter) when another instance waits for any of them.
		releaseAll: `WITH r AS (
    UPDATE ` + locks + ` AS l
    SET expires_at = '-infinity', last_wanted = l.wanted_by, wanted_by = 0, updated_at = now()
    FROM unnest($2::text[], $3::bigint[]) AS u(key, token)
    WHERE l.app = $1 AND l.key = u.key AND l.token = u.token
    RETURNING l.last_wanted, l.queue
)
SELECT count(*),
       (SELECT count(pg_notify($5, '*')) FROM (SELECT 1 FROM r WHERE last_wanted NOT IN (0, $4) OR cardinality(queue) > 0 LIMIT 1) w)
FROM r`,

		// $1 app, $2 key, $3 token, $4 ttl µs (0: no expiry, for a
		// designated reservation), $5 class. Renews a lease that is still
		// this grant's, not expired, and whose owner is alive.
		extend: `UPDATE ` + locks + `
SET expires_at = CASE WHEN $4::bigint > 0 THEN now() + $4::bigint * interval '1 microsecond' END, updated_at = now()
WHERE app = $1 AND key = $2 AND token = $3
  AND (expires_at IS NULL OR expires_at > now())
  AND NOT pg_try_advisory_xact_lock_shared($5::int4, owner_id)
RETURNING 1`,

		// $1 app, $2 key, $3 token, $4 class. Runs inside the caller's
		// transaction. statement_timestamp(), not now(): the transaction may
		// have started long ago. FOR KEY SHARE blocks grants (they assign the
		// key column, so they lock the row FOR UPDATE) but not renewals or
		// releases.
		checkTx: `SELECT 1 FROM ` + locks + `
WHERE app = $1 AND key = $2 AND token = $3
  AND (expires_at IS NULL OR expires_at > statement_timestamp())
  AND NOT pg_try_advisory_xact_lock_shared($4::int4, owner_id)
FOR KEY SHARE`,

		// $1 app, $2 key, $3 token. Runs just before the COMMIT of a
		// transaction in which CheckTx was called inside a savepoint (whose
		// row lock a ROLLBACK TO SAVEPOINT may have dropped). Same token:
		// no other grant of the key happened since this one (every grant
		// draws a new token), so nothing the next holder wrote can be
		// interleaved; FOR KEY SHARE then blocks any grant until the COMMIT
		// ends. Expiry and the owner's liveness are not re-checked: a
		// transaction fenced from the outermost level commits after them
		// too, for the same reason. Under REPEATABLE READ a grant made since
		// the snapshot makes this statement fail with a serialization error,
		// which also refuses the commit.
		recheckTx: `SELECT 1 FROM ` + locks + `
WHERE app = $1 AND key = $2 AND token = $3
FOR KEY SHARE`,

		// $1 retention µs, $2 class, $3 batch. Deletes rows untouched for
		// Retention whose lease is free (released, expired, or a reservation
		// of a dead owner) and whose FIFO is empty. Retention keeps deletion far from any in-flight
		// grant (see acquire).
		sweep: `DELETE FROM ` + locks + ` WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM ` + locks + `
    WHERE updated_at < now() - $1::bigint * interval '1 microsecond'
      AND (expires_at <= now() OR (expires_at IS NULL AND pg_try_advisory_xact_lock_shared($2::int4, owner_id)))
      AND cardinality(queue) = 0
    LIMIT $3
    FOR UPDATE SKIP LOCKED))`,

		// $1 silence bound ms, $2 keepalive idle s, $3 keepalive probes.
		// Server-side ends of a liveness session whose client went silent:
		// idle_session_timeout (PostgreSQL 14+) for a client that stops
		// speaking (the Manager pings every HealthCheckInterval), TCP
		// keepalives for a peer that stops acknowledging while idle (one
		// probe a second), tcp_user_timeout (12+) for data left
		// unacknowledged. All are user-settable; on a Unix socket the TCP
		// ones are ignored.
		// It returns server_version_num first.
		sessionTimeouts: `SELECT current_setting('server_version_num')::int,
       set_config('tcp_keepalives_idle', $2, false),
       set_config('tcp_keepalives_interval', '1', false),
       set_config('tcp_keepalives_count', $3, false),
       CASE WHEN current_setting('server_version_num')::int >= 120000
            THEN set_config('tcp_user_timeout', $1, false) END,
       CASE WHEN current_setting('server_version_num')::int >= 140000
            THEN set_config('idle_session_timeout', $1, false) END`,

		// $1 class, $2 old owner_id, $3 old pid, $4 wait ms, $5 channel.
		// Ends the previous liveness backend only if it still holds the old
		// identity's lock (pids are reused; identities never are), waits for
		// it to exit where PostgreSQL can (14+), and then wakes every waiter.
		// No row: nothing to end.
		endOldSession: `SELECT pg_terminate_backend(l.pid, $4::bigint) AND pg_notify($5, '*')::text IS NOT NULL` + oldSessionLock,
		// Before PostgreSQL 14 pg_terminate_backend cannot wait: waiters
		// notice the exit at their next poll. $4 is unused.
		endOldSession13: `SELECT pg_terminate_backend(l.pid) AND $4::bigint IS NOT NULL AND pg_notify($5, '*')::text IS NOT NULL` + oldSessionLock,

		newOwner:  `SELECT nextval(` + owners + `)::int4`,
		lockOwner: `SELECT pg_try_advisory_lock($1::int4, $2::int4)`,
		listen:    `LISTEN ` + pgx.Identifier{channel}.Sanitize(),
	}
}

// oldSessionLock finds the identity lock ($1 class, $2 owner_id) held by
// backend $3 in this database.
const oldSessionLock = `
FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = $1::int4::oid AND l.objid = $2::int4::oid AND l.objsubid = 2
  AND l.pid = $3::int4`

// ownChannel is the NOTIFY channel of the instance with identity ownerID:
// designations to it (see queries.release). The release statement builds the
// same name in SQL (channel || '_' || owner_id).
func ownChannel(channel string, ownerID int32) string {
	return channel + "_" + strconv.FormatInt(int64(ownerID), 10)
}

// channelName is the NOTIFY channel of schema's lock releases.
func channelName(schema string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(schema))
	return "pgcoord_locks_" + hex32(h.Sum32())
}

// keyHash names a key in a NOTIFY payload (keys may be longer than a payload).
func keyHash(app, key string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(app))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(key))
	return h.Sum64()
}

func hex32(v uint32) string {
	const digits = "0123456789abcdef"
	var b [8]byte
	for i := 7; i >= 0; i-- {
		b[i] = digits[v&0xf]
		v >>= 4
	}
	return string(b[:])
}
