// Package demoschema creates the tables of the demo plugins (internal/demo):
// every plugin's EnsureSchema and Load go through [Ensure], so instances
// starting at once never race on CREATE TABLE.
package demoschema

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/internal/lockkey"
	"github.com/pgcoord/pgcoord/internal/schema"
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

// Name returns the schema a plugin's tables go in: name, or "public" when
// it is empty. An invalid name is refused with an error prefixed by what
// (the plugin package and field, e.g. "asynctasks: Config.Schema").
func Name(what, name string) (string, error) {
	if name == "" {
		return "public", nil
	}
	if err := schema.Validate(name); err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	return name, nil
}

// EnsureNew is the body of every plugin's EnsureSchema: it makes the plugin
// for the schema name with newPlugin (which checks the name) and creates its tables
// with ensure.
func EnsureNew[P any](ctx context.Context, pool *pgxpool.Pool, name string, newPlugin func(string) (P, error),
	ensure func(P, context.Context, *pgxpool.Pool) error) error {
	p, err := newPlugin(name)
	if err != nil {
		return err
	}
	return ensure(p, ctx, pool)
}
