// Package demoschema creates the tables of the demo plugins (internal/demo):
// every plugin's EnsureSchema and Load go through [Ensure], so instances
// starting at once never race on CREATE TABLE.
package demoschema

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/internal/lockkey"
)

// Ensure creates schema if needed and runs ddl (CREATE TABLE IF NOT EXISTS
// statements) in one transaction that holds the advisory lock of (schema,
// plugin) first.
func Ensure(ctx context.Context, pool *pgxpool.Pool, schema, plugin, ddl string) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockkey.Key(schema, lockkey.Demo, plugin)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{schema}.Sanitize()+`;`+ddl)
		return err
	})
}
