// Package schema holds what every runtime package of pgcoord needs to know
// about pgcoord's PostgreSQL schema, and nothing that runs migrations: the
// schema-name rules ([Validate]), the default schema ([Default]), the schema
// version this build expects ([Version]) and [Check], which a component's
// Start calls once to fail with a typed error instead of a raw SQL error
// when the database is unmigrated, partly migrated, migrated by a newer
// pgcoord, or served by a PostgreSQL older than [MinServerVersion].
//
// It imports pgx only (no goose, no database/sql, no River migrator), so
// listen, pgcache, advisorylock and queue can depend on it without pulling
// the migration machinery into their builds. Package migrations re-exports
// its errors (migrations.ErrSchemaOutdated is [ErrOutdated], and so on).
package schema
