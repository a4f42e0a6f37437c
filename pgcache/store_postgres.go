package pgcache

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// querier runs statements: *pgxpool.Pool, pgx.Tx and *pgx.Conn are queriers.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// pgSQL holds the statements of one schema, built once with the table name
// quoted by pgx.Identifier. Every value is a $n parameter.
type pgSQL struct {
	table                                                                                             string
	get, getTTL, mget, mgetTTL, set, mset, del, mdel, reset, keys, ttl, incr, objSet, objDel, objKind string
	sweepExpired, countEntries, evictOldest                                                           string
}

// notExpired is the expiry filter of every read: the database clock decides.
const notExpired = `(expires_at IS NULL OR expires_at > now())`

// expiresAt computes an expiry from a TTL in microseconds ($n); <= 0 means none.
func expiresAt(n int) string {
	return fmt.Sprintf(`CASE WHEN $%d::bigint > 0 THEN clock_timestamp() + $%d::bigint * interval '1 microsecond' END`, n, n)
}

// Lock order: every statement that writes several rows (mset, mdel, reset)
// locks them in ascending key order (the key column is COLLATE "C", so byte
// order), through ORDER BY before the rows are written or under FOR UPDATE.
// Two such statements over overlapping keys therefore wait for each other
// in one direction only and never deadlock, whatever order the caller gave
// the keys in. The sweeper's statements use SKIP LOCKED and never wait.
func newPgSQL(table string) pgSQL {
	return pgSQL{
		table: table,
		get:   `SELECT value, kind FROM ` + table + ` WHERE app = $1 AND prefix = $2 AND key = $3 AND ` + notExpired,
		getTTL: `SELECT value, kind, COALESCE((extract(epoch FROM expires_at - now()) * 1000000)::bigint, -1) FROM ` + table +
			` WHERE app = $1 AND prefix = $2 AND key = $3 AND ` + notExpired,
		mget: `SELECT key, value, kind FROM ` + table + ` WHERE app = $1 AND prefix = $2 AND key = ANY($3::text[]) AND ` + notExpired,
		mgetTTL: `SELECT key, value, kind, COALESCE((extract(epoch FROM expires_at - now()) * 1000000)::bigint, -1) FROM ` + table +
			` WHERE app = $1 AND prefix = $2 AND key = ANY($3::text[]) AND ` + notExpired,
		set: `INSERT INTO ` + table + ` (app, prefix, key, kind, value, expires_at, written_at)
VALUES ($1, $2, $3, $4, $5, ` + expiresAt(6) + `, clock_timestamp())
ON CONFLICT (app, prefix, key) DO UPDATE SET kind = excluded.kind, value = excluded.value,
  expires_at = excluded.expires_at, written_at = excluded.written_at`,
		mset: `INSERT INTO ` + table + ` (app, prefix, key, kind, value, expires_at, written_at)
SELECT $1, $2, k, d, v, ` + expiresAt(6) + `, clock_timestamp()
FROM unnest($3::text[], $4::smallint[], $5::bytea[]) AS u(k, d, v)
ORDER BY k COLLATE "C"
ON CONFLICT (app, prefix, key) DO UPDATE SET kind = excluded.kind, value = excluded.value,
  expires_at = excluded.expires_at, written_at = excluded.written_at`,
		del: `DELETE FROM ` + table + ` WHERE app = $1 AND prefix = $2 AND key = $3`,
		mdel: `WITH l AS MATERIALIZED (SELECT key FROM ` + table + ` WHERE app = $1 AND prefix = $2 AND key = ANY($3::text[])
  ORDER BY key FOR UPDATE)
DELETE FROM ` + table + ` AS e USING l WHERE e.app = $1 AND e.prefix = $2 AND e.key = l.key`,
		reset: `WITH l AS MATERIALIZED (SELECT key FROM ` + table + ` WHERE app = $1 AND prefix = $2 ORDER BY key FOR UPDATE)
DELETE FROM ` + table + ` AS e USING l WHERE e.app = $1 AND e.prefix = $2 AND e.key = l.key`,
		keys: `SELECT key FROM ` + table + ` WHERE app = $1 AND prefix = $2 AND key LIKE $3 AND ` + notExpired +
			` ORDER BY key`,
		ttl: `SELECT CASE WHEN expires_at IS NULL THEN -1 ELSE greatest((extract(epoch FROM expires_at - now()) * 1000000)::bigint, 0) END FROM ` + table +
			` WHERE app = $1 AND prefix = $2 AND key = $3 AND ` + notExpired,
		// One statement: concurrent increments serialise on the row lock of
		// the upsert, and each sees the committed value of the one before.
		// now() is used throughout so the expiry tests of one row agree.
		incr: `INSERT INTO ` + table + ` AS e (app, prefix, key, kind, value, expires_at, written_at)
VALUES ($1, $2, $3, 0, convert_to($4::bigint::text, 'UTF8'),
  CASE WHEN $5::bigint > 0 THEN now() + $5::bigint * interval '1 microsecond' END, clock_timestamp())
ON CONFLICT (app, prefix, key) DO UPDATE SET
  value = CASE WHEN e.expires_at <= now() THEN excluded.value
    ELSE convert_to((convert_from(e.value, 'UTF8')::bigint + $4::bigint)::text, 'UTF8') END,
  kind = 0,
  expires_at = CASE WHEN e.expires_at <= now() THEN excluded.expires_at ELSE e.expires_at END,
  written_at = excluded.written_at
RETURNING convert_from(value, 'UTF8')::bigint`,
		// The object is merged in SQL under the row lock: concurrent writers of
		// different fields never lose each other's fields. The entry keeps its
		// expiry; an expired entry counts as missing. A stored value that is not
		// an object is left alone (no row returned).
		objSet: `INSERT INTO ` + table + ` AS e (app, prefix, key, kind, value, expires_at, written_at)
VALUES ($1, $2, $3, 0, convert_to(jsonb_build_object($4::text, $5::jsonb)::text, 'UTF8'), ` + expiresAt(6) + `, clock_timestamp())
ON CONFLICT (app, prefix, key) DO UPDATE SET
  value = convert_to((CASE WHEN e.expires_at <= now() THEN '{}'::jsonb ELSE convert_from(e.value, 'UTF8')::jsonb END
    || jsonb_build_object($4::text, $5::jsonb))::text, 'UTF8'),
  kind = 0,
  expires_at = CASE WHEN e.expires_at <= now() THEN excluded.expires_at ELSE e.expires_at END,
  written_at = excluded.written_at
WHERE (e.expires_at <= now()) IS TRUE
   OR CASE WHEN e.kind = 0 THEN jsonb_typeof(convert_from(e.value, 'UTF8')::jsonb) = 'object' ELSE false END
RETURNING 1`,
		objDel: `UPDATE ` + table + ` AS e SET
  value = convert_to((convert_from(e.value, 'UTF8')::jsonb - $4::text)::text, 'UTF8'),
  written_at = clock_timestamp()
WHERE app = $1 AND prefix = $2 AND key = $3 AND ` + notExpired + `
  AND CASE WHEN e.kind = 0 THEN jsonb_typeof(convert_from(e.value, 'UTF8')::jsonb) = 'object' ELSE false END
RETURNING 1`,
		objKind: `SELECT CASE WHEN kind = 0 THEN jsonb_typeof(convert_from(value, 'UTF8')::jsonb) ELSE 'bytes' END FROM ` + table +
			` WHERE app = $1 AND prefix = $2 AND key = $3 AND ` + notExpired,
		sweepExpired: `DELETE FROM ` + table + ` WHERE (app, prefix, key) IN (
  SELECT app, prefix, key FROM ` + table + ` WHERE app = $1 AND expires_at <= now()
  LIMIT $2 FOR UPDATE SKIP LOCKED)
RETURNING prefix`,
		countEntries: `SELECT count(*) FROM ` + table + ` WHERE app = $1 AND prefix = $2`,
		evictOldest: `DELETE FROM ` + table + ` WHERE (app, prefix, key) IN (
  SELECT app, prefix, key FROM ` + table + ` WHERE app = $1 AND prefix = $2
  ORDER BY written_at, key LIMIT $3 FOR UPDATE SKIP LOCKED)`,
	}
}

// pgStore is the postgres store: rows of cache_entries under (app, prefix).
type pgStore struct {
	db          querier
	sql         *pgSQL
	app, prefix string
}

func micros(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	if us := d.Microseconds(); us > 0 {
		return us
	}
	return 1
}

func (s *pgStore) q(q querier) querier {
	if q == nil {
		return s.db
	}
	return q
}

func (s *pgStore) get(ctx context.Context, key string) (encoded, time.Duration, bool, error) {
	var e encoded
	err := s.db.QueryRow(ctx, s.sql.get, s.app, s.prefix, key).Scan(&e.raw, &e.kind)
	if errors.Is(err, pgx.ErrNoRows) {
		return encoded{}, 0, false, nil
	}
	if err != nil {
		return encoded{}, 0, false, err
	}
	return e, 0, true, nil
}

// getTTL is get that also returns the remaining time by the database clock
// (noTTL without expiry); the near cache uses it to bound its own copy.
func (s *pgStore) getTTL(ctx context.Context, key string) (encoded, time.Duration, bool, error) {
	var (
		e  encoded
		us int64
	)
	err := s.db.QueryRow(ctx, s.sql.getTTL, s.app, s.prefix, key).Scan(&e.raw, &e.kind, &us)
	if errors.Is(err, pgx.ErrNoRows) {
		return encoded{}, 0, false, nil
	}
	if err != nil {
		return encoded{}, 0, false, err
	}
	if us < 0 {
		return e, noTTL, true, nil
	}
	return e, time.Duration(us) * time.Microsecond, true, nil
}

func (s *pgStore) mget(ctx context.Context, keys []string) ([]encoded, []bool, error) {
	vals, found := make([]encoded, len(keys)), make([]bool, len(keys))
	// One buffer holds every value read; span i of it becomes vals[i].
	var buf []byte
	spans := make([][2]int, len(keys))
	err := s.eachEntry(ctx, s.sql.mget, keys, func(i int, e encoded, _ int64) error {
		spans[i][0] = len(buf)
		buf = append(buf, e.raw...)
		spans[i][1] = len(buf)
		vals[i].kind, found[i] = e.kind, true
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for i, sp := range spans {
		if found[i] {
			vals[i].raw = buf[sp[0]:sp[1]:sp[1]]
		}
	}
	return vals, found, nil
}

// mgetTTL is mget that also returns each remaining time (see getTTL). Each
// value gets a buffer of its own: the near cache keeps them one by one.
func (s *pgStore) mgetTTL(ctx context.Context, keys []string) ([]encoded, []time.Duration, []bool, error) {
	vals, ttls, found := make([]encoded, len(keys)), make([]time.Duration, len(keys)), make([]bool, len(keys))
	err := s.eachEntry(ctx, s.sql.mgetTTL, keys, func(i int, e encoded, us int64) error {
		ttl := noTTL
		if us >= 0 {
			ttl = time.Duration(us) * time.Microsecond
		}
		vals[i], ttls[i], found[i] = encoded{raw: bytes.Clone(e.raw), kind: e.kind}, ttl, true
		return nil
	})
	if err != nil {
		return nil, nil, nil, err
	}
	return vals, ttls, found, nil
}

// eachEntry runs sql, a read of (app, prefix, keys) whose rows are key,
// value, kind and, in mgetTTL, the remaining time in microseconds, and
// calls fn for every position of keys that a row answers (a key asked for
// twice, twice). e.raw points into pgx's row buffer: it is valid only
// during the call, so a caller that decodes needs no copy.
func (s *pgStore) eachEntry(ctx context.Context, sql string, keys []string, fn func(i int, e encoded, us int64) error) error {
	idx := getKeyIndex(keys)
	defer putKeyIndex(idx)
	rows, err := s.db.Query(ctx, sql, s.app, s.prefix, keys)
	if err != nil {
		return err
	}
	defer rows.Close()
	var textBuf []byte
	for rows.Next() {
		row := rows.RawValues()
		e, us, err := rawEntry(row, rows.FieldDescriptions(), &textBuf)
		if err != nil {
			return err
		}
		for i := idx.first(row[0]); i >= 0; i = idx.next[i] {
			if err := fn(i, e, us); err != nil {
				return err
			}
		}
	}
	return rows.Err()
}

// rawEntry reads a row's value, kind and (when the row has it) remaining
// time from their wire bytes, without pgx's scanning: binary format, what
// pgx asks for with the extended protocol, or text, what the simple
// protocol returns (a bytea value is then decoded into *buf).
func rawEntry(row [][]byte, fds []pgconn.FieldDescription, buf *[]byte) (encoded, int64, error) {
	var e encoded
	if row[1] == nil || row[2] == nil {
		return e, 0, errors.New("pgcache: read a NULL value or kind")
	}
	e.raw = row[1]
	if fds[1].Format == pgx.TextFormatCode {
		t := row[1]
		if len(t) < 2 || t[0] != '\\' || t[1] != 'x' {
			return e, 0, errors.New("pgcache: read a bytea value in an unknown text form")
		}
		n := hex.DecodedLen(len(t) - 2)
		*buf = slices.Grow((*buf)[:0], n)[:n]
		if _, err := hex.Decode(*buf, t[2:]); err != nil {
			return e, 0, fmt.Errorf("pgcache: read a bytea value: %w", err)
		}
		e.raw = *buf
	}
	k, err := rawInt(row[2], fds[2].Format)
	if err != nil {
		return e, 0, err
	}
	e.kind = kind(k)
	var us int64
	if len(row) > 3 && row[3] != nil {
		if us, err = rawInt(row[3], fds[3].Format); err != nil {
			return e, 0, err
		}
	}
	return e, us, nil
}

// rawInt reads a smallint, integer or bigint column's wire bytes.
func rawInt(b []byte, format int16) (int64, error) {
	if format == pgx.TextFormatCode {
		return strconv.ParseInt(string(b), 10, 64)
	}
	switch len(b) {
	case 2:
		return int64(int16(binary.BigEndian.Uint16(b))), nil
	case 4:
		return int64(int32(binary.BigEndian.Uint32(b))), nil
	case 8:
		return int64(binary.BigEndian.Uint64(b)), nil
	}
	return 0, fmt.Errorf("pgcache: read an integer of %d bytes", len(b))
}

// keyIndex maps a key read back to its positions in the keys asked for
// (a key may be asked for twice), without allocating per key.
type keyIndex struct {
	pos  map[string]int // first position of each key
	next []int          // next position of the same key, -1 after the last
}

// keyIndexes keeps keyIndexes between reads: building one allocates its
// map and slice, which a typed MGet otherwise would do for every call.
var keyIndexes = sync.Pool{New: func() any { return &keyIndex{pos: map[string]int{}} }}

// getKeyIndex returns an index of keys from keyIndexes (put it back after
// the read).
func getKeyIndex(keys []string) *keyIndex {
	x := keyIndexes.Get().(*keyIndex)
	clear(x.pos)
	x.next = slices.Grow(x.next[:0], len(keys))[:len(keys)]
	for i := len(keys) - 1; i >= 0; i-- {
		x.next[i] = -1
		if j, ok := x.pos[keys[i]]; ok {
			x.next[i] = j
		}
		x.pos[keys[i]] = i
	}
	return x
}

// putKeyIndex returns x to keyIndexes unless it indexed a read so large
// that keeping its map would waste memory.
func putKeyIndex(x *keyIndex) {
	if len(x.next) <= maxPooledKeys {
		keyIndexes.Put(x)
	}
}

// maxPooledKeys is the largest read whose keyIndex is kept for the next.
const maxPooledKeys = 1024

// first is the first position of a key read back as the raw bytes of a
// text column (the same in text and binary format), -1 if not asked for.
func (x *keyIndex) first(key []byte) int {
	if i, ok := x.pos[string(key)]; ok {
		return i
	}
	return -1
}

func (s *pgStore) set(ctx context.Context, q querier, key string, e encoded, ttl time.Duration) error {
	_, err := s.q(q).Exec(ctx, s.sql.set, s.app, s.prefix, key, e.kind, e.raw, micros(ttl))
	return err
}

func (s *pgStore) mset(ctx context.Context, q querier, keys []string, vals []encoded, ttl time.Duration) error {
	kinds, raws := make([]int16, len(vals)), make([][]byte, len(vals))
	for i, v := range vals {
		kinds[i], raws[i] = int16(v.kind), v.raw
	}
	_, err := s.q(q).Exec(ctx, s.sql.mset, s.app, s.prefix, keys, kinds, raws, micros(ttl))
	return err
}

func (s *pgStore) del(ctx context.Context, q querier, keys []string) error {
	var err error
	if len(keys) == 1 {
		_, err = s.q(q).Exec(ctx, s.sql.del, s.app, s.prefix, keys[0])
	} else {
		_, err = s.q(q).Exec(ctx, s.sql.mdel, s.app, s.prefix, keys)
	}
	return err
}

func (s *pgStore) reset(ctx context.Context, q querier) error {
	_, err := s.q(q).Exec(ctx, s.sql.reset, s.app, s.prefix)
	return err
}

func (s *pgStore) keys(ctx context.Context, pattern string) ([]string, error) {
	rows, err := s.db.Query(ctx, s.sql.keys, s.app, s.prefix, globToLike(pattern))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func (s *pgStore) ttl(ctx context.Context, key string) (time.Duration, bool, error) {
	var us int64
	err := s.db.QueryRow(ctx, s.sql.ttl, s.app, s.prefix, key).Scan(&us)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	if us < 0 {
		return NoExpiry, true, nil
	}
	return time.Duration(us) * time.Microsecond, true, nil
}

// isDataError reports a stored value that SQL could not convert (not an
// integer, not JSON, not UTF-8, out of range).
func isDataError(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && len(pgErr.Code) == 5 && pgErr.Code[:2] == "22"
}

func (s *pgStore) incrBy(ctx context.Context, q querier, key string, n int64, ttl time.Duration) (int64, error) {
	var v int64
	err := s.q(q).QueryRow(ctx, s.sql.incr, s.app, s.prefix, key, n, micros(ttl)).Scan(&v)
	if isDataError(err) {
		// Not the server's message: it quotes the whole stored value. The
		// caller names the key.
		var pgErr *pgconn.PgError
		errors.As(err, &pgErr)
		return 0, fmt.Errorf("%w (SQLSTATE %s)", ErrNotInteger, pgErr.Code)
	}
	return v, err
}

func (s *pgStore) objSet(ctx context.Context, q querier, key, field string, e encoded, ttl time.Duration) error {
	if e.kind != kindJSON {
		return fmt.Errorf("%w: a field of an object must be JSON, not raw bytes", ErrNotCacheable)
	}
	var one int
	err := s.q(q).QueryRow(ctx, s.sql.objSet, s.app, s.prefix, key, field, string(e.raw), micros(ttl)).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: %q", ErrNotObject, key)
	}
	return err
}

func (s *pgStore) objDel(ctx context.Context, q querier, key, field string) error {
	var one int
	qq := s.q(q)
	err := qq.QueryRow(ctx, s.sql.objDel, s.app, s.prefix, key, field).Scan(&one)
	if !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	// Nothing updated: the key is missing (nothing to do) or not an object.
	var typ string
	err = qq.QueryRow(ctx, s.sql.objKind, s.app, s.prefix, key).Scan(&typ)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return err
	case typ != "object":
		return fmt.Errorf("%w: %q holds %s", ErrNotObject, key, typ)
	}
	return nil
}
