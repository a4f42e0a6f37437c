package advisorylock

import (
	"hash/fnv"

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
	acquire, markWanted, release, transfer, releaseAll, extend, checkTx, recheckTx, sweep string
	newOwner, lockOwner, listen, sessionTimeouts, endOldSession, endOldSession13          string
}

func buildQueries(schema, channel string) queries {
	locks := pgx.Identifier{schema, "locks"}.Sanitize()
	// The schema is validated ([a-z_][a-z0-9_]*), so the sanitized name has no quote to escape.
	tokens := "'" + pgx.Identifier{schema, "lock_tokens"}.Sanitize() + "'"
	owners := "'" + pgx.Identifier{schema, "lock_owners"}.Sanitize() + "'"
	return queries{
		// $1 app, $2 key, $3 owner_id, $4 owner, $5 ttl in µs (0: no expiry), $6 identity class.
		// Grants when the key has no row, or its lease is free: released
		// (-infinity), expired (database clock), or its owner's session is gone.
		// The row lock taken by ON CONFLICT serialises concurrent grants, and
		// the update-path token is drawn after that lock, so a grant's token is
		// larger than the token it replaces. (The insert-path token is drawn
		// before; it can only lose to a newer grant if the row was deleted in
		// between, which the sweeper does only after Retention of no activity.)
		acquire: `INSERT INTO ` + locks + ` AS l (app, key, token, owner_id, owner, expires_at)
VALUES ($1, $2, nextval(` + tokens + `), $3, $4,
        CASE WHEN $5::bigint > 0 THEN now() + $5::bigint * interval '1 microsecond' END)
ON CONFLICT (app, key) DO UPDATE SET
    key         = EXCLUDED.key, -- same value: only makes the row lock FOR UPDATE strength (see checkTx)
    token       = nextval(` + tokens + `),
    owner_id    = EXCLUDED.owner_id,
    owner       = EXCLUDED.owner,
    expires_at  = EXCLUDED.expires_at,
    wanted_by   = CASE WHEN l.wanted_by = EXCLUDED.owner_id THEN 0 ELSE l.wanted_by END,
    taken_from  = CASE WHEN l.expires_at = '-infinity' THEN NULL ELSE l.owner END,
    acquired_at = now(),
    updated_at  = now()
WHERE l.expires_at <= now() OR pg_try_advisory_xact_lock_shared($6::int4, l.owner_id)
RETURNING token, taken_from`,

		// $1 app, $2 key, $3 owner_id of the waiting instance, $4 class.
		// Marks the key as wanted so that its release NOTIFYs, and reports
		// whether it became free meanwhile and how long its lease has left.
		// It runs after a failed acquire: it takes the row lock, so either the
		// release saw the mark or this sees the release.
		markWanted: `UPDATE ` + locks + ` AS l
SET wanted_by = CASE WHEN l.wanted_by IN (0, $3) THEN $3 ELSE -1 END
WHERE l.app = $1 AND l.key = $2
RETURNING (l.expires_at <= now() OR pg_try_advisory_xact_lock_shared($4::int4, l.owner_id)) IS TRUE,
          CASE WHEN l.expires_at IS NULL THEN -1
               WHEN l.expires_at <= now() THEN 0
               ELSE greatest(0, floor(extract(epoch FROM l.expires_at - now()) * 1000000))::bigint END`,

		// $1 app, $2 key, $3 token, $4 releasing owner_id, $5 channel, $6 payload.
		// Frees the lease only if it still carries this grant's token. SET
		// reads the row version it updates (under the row lock), so
		// last_wanted is wanted_by as it was at release: NOTIFY only when
		// another instance waits. (void::text is '': IS NOT NULL is true.)
		release: `UPDATE ` + locks + ` AS l
SET expires_at = '-infinity', last_wanted = l.wanted_by, wanted_by = 0, updated_at = now()
WHERE l.app = $1 AND l.key = $2 AND l.token = $3
RETURNING l.last_wanted NOT IN (0, $4) AND pg_notify($5, $6)::text IS NOT NULL`,

		// $1 app, $2 key, $3 token being released, $4 owner_id, $5 owner, $6
		// ttl µs of the new grant (0: no expiry). Hands the lease from one
		// grant to the next of the same instance without freeing it: a new
		// token, no gap. Only when no other instance waits (wanted_by), so
		// handoffs cannot starve other instances. o takes the row lock FOR
		// UPDATE, which conflicts with CheckTx's FOR KEY SHARE like a grant
		// (a plain UPDATE that leaves the key unchanged would not), and SKIP
		// LOCKED: while any transaction holds the row (the releasing
		// holder's own CheckTx transaction, still open, included) there is
		// no handoff, and Release falls back to a plain release that never
		// waits, rather than waiting for that transaction.
		transfer: `WITH o AS (
    SELECT 1 FROM ` + locks + `
    WHERE app = $1 AND key = $2 AND token = $3 AND wanted_by IN (0, $4)
    FOR UPDATE SKIP LOCKED
)
UPDATE ` + locks + ` AS l SET
    token       = nextval(` + tokens + `),
    owner_id    = $4,
    owner       = $5,
    expires_at  = CASE WHEN $6::bigint > 0 THEN now() + $6::bigint * interval '1 microsecond' END,
    wanted_by   = 0,
    taken_from  = NULL,
    acquired_at = now(),
    updated_at  = now()
FROM o
WHERE l.app = $1 AND l.key = $2 AND l.token = $3 AND l.wanted_by IN (0, $4)
RETURNING l.token`,

		// $1 app, $2 keys, $3 tokens, $4 owner_id, $5 channel. Releases many
		// grants in one statement (Close); one NOTIFY ("*": wake every
		// waiter) when another instance waits for any of them.
		releaseAll: `WITH r AS (
    UPDATE ` + locks + ` AS l
    SET expires_at = '-infinity', last_wanted = l.wanted_by, wanted_by = 0, updated_at = now()
    FROM unnest($2::text[], $3::bigint[]) AS u(key, token)
    WHERE l.app = $1 AND l.key = u.key AND l.token = u.token
    RETURNING l.last_wanted
)
SELECT count(*),
       (SELECT count(pg_notify($5, '*')) FROM (SELECT 1 FROM r WHERE last_wanted NOT IN (0, $4) LIMIT 1) w)
FROM r`,

		// $1 app, $2 key, $3 token, $4 ttl µs, $5 class. Renews a lease that
		// is still this grant's, not expired, and whose owner is alive.
		extend: `UPDATE ` + locks + `
SET expires_at = now() + $4::bigint * interval '1 microsecond', updated_at = now()
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
		// Retention whose lease is free: released, expired, or a reservation
		// of a dead owner. Retention keeps deletion far from any in-flight
		// grant (see acquire).
		sweep: `DELETE FROM ` + locks + ` WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM ` + locks + `
    WHERE updated_at < now() - $1::bigint * interval '1 microsecond'
      AND (expires_at <= now() OR (expires_at IS NULL AND pg_try_advisory_xact_lock_shared($2::int4, owner_id)))
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
