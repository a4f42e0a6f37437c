// Package migrations installs and removes every PostgreSQL object pgcoord needs,
// as goose migrations embedded in the binary.
//
// All objects live in one schema ([DefaultSchema], "pgcoord", unless
// [Options.Schema] says otherwise), and goose's version table is our own
// (<schema>.goose_db_version), so pgcoord's migrations never collide with the
// application's own goose migrations in the same database.
//
// # What is in here
//
//   - River's schema, one goose Go migration per River migration version
//     (versions 1-8 for River v0.51.2), each calling River's own migrator
//     ([rivermigrate] Migrate) for exactly that version, in River's own
//     transaction, so River's record matches what `river migrate-up` writes. River's SQL is not copied into this repository: a
//     River upgrade that brings a new migration version needs one new goose
//     migration here, and a test fails until it exists.
//   - pgcoord's own tables, as plain SQL files in [FS] (sql/*.sql). They use
//     unqualified names and rely on search_path pointing at the schema.
//
// # Checking them
//
// [CheckSchema] (and app.Start) verifies that the server is PostgreSQL 14 or
// newer and that the schema holds exactly versions 1 to [LatestVersion], with
// River's own record in step; otherwise it returns a [*SchemaVersionError]
// wrapping [ErrSchemaOutdated] or [ErrSchemaTooNew], naming both versions and
// the command to run. The check itself lives in the leaf package
// internal/schema, which imports pgx only, so runtime packages can run it
// without depending on goose or database/sql.
//
// # Running them
//
// [Up], [Down], [Status] and [Version] open one dedicated connection with
// search_path set to the schema, take a session advisory lock so that several
// instances migrating at once apply each migration exactly once, create the
// schema if needed, and run goose's Provider.
//
// Users who run the goose CLI themselves can apply the SQL files in [FS] with
// a DSN whose search_path is the schema and with -table <schema>.goose_db_version.
// River's tables are Go migrations and need either this package's API
// (pgcoord migrate up) or River's own CLI (river migrate-up --schema <schema>).
//
// A database set up that way can switch to [Up] later: it records River's
// versions 1-8 without re-running them. goose (CLI and library) rolls back
// from the version row written last, so every run of this package renumbers
// the rows of its own version table into version order; [Down] and the goose
// CLI then roll back in version order.
package migrations
