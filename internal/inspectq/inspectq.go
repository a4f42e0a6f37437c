// Package inspectq holds the read-only queries that `pgcoord inspect` and
// the dashboard both run against a pgcoord schema, so the two views of a
// cluster read its state the same way: the row collectors, the instance
// registry's schema version, the "owner still alive" test of a lease and
// the per-cache summary. Each caller keeps its own result types (their JSON
// shapes differ); the SQL and its meaning live here once.
package inspectq

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// RegistryVersion is the schema version (migration 00013) that created the
// instance registry; an older schema has no instances table.
const RegistryVersion = 13

// Querier is a pool, a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Collect runs sql with args and scans every row with scan. Errors are
// prefixed with what was read.
func Collect[T any](ctx context.Context, db Querier, what, sql string, scan pgx.RowToFunc[T], args ...any) ([]T, error) {
	rows, err := db.Query(ctx, sql, args...)
	if err == nil {
		var out []T
		if out, err = pgx.CollectRows(rows, scan); err == nil {
			return out, nil
		}
	}
	return nil, fmt.Errorf("%s: %w", what, err)
}

// Each runs sql with args and calls fn after scanning each row into dest.
// Errors are prefixed with what was read.
func Each(ctx context.Context, db Querier, what, sql string, dest []any, fn func() error, args ...any) error {
	rows, err := db.Query(ctx, sql, args...)
	if err == nil {
		_, err = pgx.ForEachRow(rows, dest, fn)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// Fields is a scan function for [Collect] that scans a row's columns, in
// order, into the fields of a new T that fields lists.
func Fields[T any](fields func(*T) []any) pgx.RowToFunc[T] {
	return func(r pgx.CollectableRow) (T, error) {
		var v T
		return v, r.Scan(fields(&v)...)
	}
}

// Table is the quoted name of a pgcoord table in schema.
func Table(schema, name string) string { return pgx.Identifier{schema, name}.Sanitize() }

// OwnerLive is an SQL boolean expression over a lease row of the locks
// table aliased l: true while the lease owner's liveness session holds its
// identity lock (the exclusive two-key advisory lock whose second key is
// owner_id), as advisorylock's own queries decide it. A lease is held when
// it has not expired and OwnerLive holds.
const OwnerLive = `EXISTS (SELECT 1 FROM pg_locks p WHERE p.locktype = 'advisory' AND p.granted
		AND p.mode = 'ExclusiveLock' AND p.objsubid = 2 AND p.objid = l.owner_id::oid
		AND p.database = (SELECT oid FROM pg_database WHERE datname = current_database()))`

// Caches summarises the cache_entries table of schema, one row per cache
// (app, prefix), ordered by app and prefix: entries, bytes of values, and
// expired entries the sweeper has not deleted yet. T is a struct of five
// fields in that order: App, Prefix string; Entries, Bytes, Expired int64.
func Caches[T any](ctx context.Context, db Querier, schema string) ([]T, error) {
	return Collect(ctx, db, "caches", `
		SELECT app, prefix, count(*), coalesce(sum(octet_length(value)), 0)::bigint,
		       count(*) FILTER (WHERE expires_at <= now())
		FROM `+Table(schema, "cache_entries")+`
		GROUP BY 1, 2 ORDER BY 1, 2`, pgx.RowToStructByPos[T])
}
