package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/pgcoord/pgcoord/internal/lockkey"
	"github.com/pgcoord/pgcoord/internal/schema"
)

// DefaultSchema is the schema that holds pgcoord's tables when no other is configured.
const DefaultSchema = schema.Default

// VersionTable is the name of goose's version table inside the schema.
const VersionTable = schema.VersionTable

// FS holds pgcoord's SQL migrations (the *.sql files under sql/). River's migrations
// are Go migrations and are not in FS; see the package documentation.
//
//go:embed sql
var embedded embed.FS

// FS is the embedded directory of SQL migrations, rooted at the migration files.
var FS = mustSub(embedded, "sql")

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err) // the embed pattern above guarantees the directory exists
	}
	return sub
}

// ErrInvalidSchema is returned (wrapped) when a schema name is not a plain
// lower-case PostgreSQL identifier (or, for pgcoord's own schema, is public).
var ErrInvalidSchema = schema.ErrInvalid

// ErrSchemaOutdated is returned (wrapped in a *SchemaVersionError) by
// [CheckSchema] and by every component's Start when the database lacks
// migrations this build needs. The error names both versions and the
// command to run.
var ErrSchemaOutdated = schema.ErrOutdated

// ErrSchemaTooNew is returned (wrapped in a *SchemaVersionError) by
// [CheckSchema] and by every component's Start when a newer pgcoord migrated
// the database.
var ErrSchemaTooNew = schema.ErrTooNew

// ErrServerTooOld is returned (wrapped) by [CheckSchema] and every
// component's Start when PostgreSQL is older than the supported range (14).
var ErrServerTooOld = schema.ErrServerTooOld

// SchemaVersionError says how the database's schema differs from what this
// build expects; see [ErrSchemaOutdated] and [ErrSchemaTooNew].
type SchemaVersionError = schema.VersionError

// ValidateSchema reports whether name can be used as a schema name: 1 to 63
// bytes of lower-case ASCII letters, digits and underscores, not starting with
// a digit, and not a reserved "pg_" name. Every package of pgcoord validates
// its schema with it before any SQL runs, so schema names never need quoting
// rules beyond [pgx.Identifier]. pgcoord's own schema may also not be public
// (see [Options.Schema]).
func ValidateSchema(name string) error { return schema.Validate(name) }

// CheckSchema verifies that the server is PostgreSQL 14 or newer and that
// schemaName holds exactly the migrations this build expects (what every
// component's Start checks). It returns nil, or an error wrapping
// [ErrInvalidSchema], [ErrServerTooOld], [ErrSchemaOutdated] or [ErrSchemaTooNew].
func CheckSchema(ctx context.Context, pool *pgxpool.Pool, schemaName string) error {
	return schema.Check(ctx, pool, schemaName)
}

// Options configures a migration run. A nil *Options means all defaults.
type Options struct {
	// Schema is the schema holding pgcoord's tables and goose's version table.
	// Defaults to DefaultSchema. It may not be public.
	Schema string

	// TargetVersion is the version to migrate to. For Up, 0 means the latest
	// version. For Down, 0 means remove everything: every migration is rolled
	// back, then goose's version table and the schema (only if it is then
	// empty) are dropped.
	TargetVersion int64

	// Logger receives one Info record per applied migration. Defaults to a
	// logger that discards Info and logs warnings to stderr.
	Logger *slog.Logger
}

func (o *Options) withDefaults() Options {
	var out Options
	if o != nil {
		out = *o
	}
	if out.Schema == "" {
		out.Schema = DefaultSchema
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return out
}

func (o Options) validate() error {
	// Not public: the SQL files refuse to run there too (see sql/), since
	// table names like messages and locks would collide with the application's.
	if err := schema.ValidatePgcoord(o.Schema); err != nil {
		return fmt.Errorf("Options.Schema: %w", err)
	}
	if o.TargetVersion < 0 {
		return fmt.Errorf("Options.TargetVersion: must not be negative, got %d", o.TargetVersion)
	}
	return nil
}

// Result is one migration applied or rolled back.
type Result struct {
	Version  int64
	Name     string // file name for SQL migrations, "river_NNN" for River's
	Up       bool
	Duration time.Duration
	// RecordedOnly is true for a River version that River's own migrator had
	// already applied: Up only recorded it in goose's table.
	RecordedOnly bool
}

// MigrationStatus is the state of one known migration.
type MigrationStatus struct {
	Version   int64
	Name      string
	Applied   bool
	AppliedAt time.Time // zero when not applied
}

// Up applies every pending migration (or those up to Options.TargetVersion).
// Applying twice is a no-op. Several processes may call Up at once: a session
// advisory lock serialises them and each migration runs exactly once.
func Up(ctx context.Context, pool *pgxpool.Pool, opts *Options) ([]Result, error) {
	o := opts.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	var out []Result
	err := withProvider(ctx, pool, o, true, func(p *goose.Provider, rec *recordedOnly) error {
		var (
			res []*goose.MigrationResult
			err error
		)
		if o.TargetVersion == 0 {
			res, err = p.Up(ctx)
		} else {
			res, err = p.UpTo(ctx, o.TargetVersion)
		}
		out = convertResults(o.Logger, res, rec)
		return err
	})
	if err != nil {
		return out, fmt.Errorf("pgcoord migrations up: %w", err)
	}
	return out, nil
}

// Down rolls back applied migrations newer than Options.TargetVersion. With
// TargetVersion 0 it removes everything pgcoord created, including goose's
// version table and the schema itself when nothing else is left in it.
func Down(ctx context.Context, pool *pgxpool.Pool, opts *Options) ([]Result, error) {
	o, exists, err := existing(ctx, pool, opts)
	if err != nil || !exists {
		return nil, err
	}
	var out []Result
	err = withProvider(ctx, pool, o, false, func(p *goose.Provider, rec *recordedOnly) error {
		res, err := p.DownTo(ctx, o.TargetVersion)
		out = convertResults(o.Logger, res, rec)
		if err != nil || o.TargetVersion != 0 {
			return err
		}
		return dropVersionTableAndSchema(ctx, pool, o)
	})
	if err != nil {
		return out, fmt.Errorf("pgcoord migrations down: %w", err)
	}
	return out, nil
}

// Status lists every known migration in version order with whether it is applied.
func Status(ctx context.Context, pool *pgxpool.Pool, opts *Options) ([]MigrationStatus, error) {
	o, exists, err := existing(ctx, pool, opts)
	if err != nil {
		return nil, err
	}
	if !exists {
		var out []MigrationStatus
		for _, m := range allMigrations(o.Schema) {
			out = append(out, MigrationStatus{Version: m.Version, Name: m.name})
		}
		return out, nil
	}
	var out []MigrationStatus
	err = withProvider(ctx, pool, o, false, func(p *goose.Provider, _ *recordedOnly) error {
		st, err := p.Status(ctx)
		if err != nil {
			return err
		}
		for _, s := range st {
			out = append(out, MigrationStatus{
				Version:   s.Source.Version,
				Name:      sourceName(s.Source),
				Applied:   s.State == goose.StateApplied,
				AppliedAt: s.AppliedAt,
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pgcoord migrations status: %w", err)
	}
	return out, nil
}

// Version returns the highest applied migration version, 0 when none is.
func Version(ctx context.Context, pool *pgxpool.Pool, opts *Options) (int64, error) {
	o, exists, err := existing(ctx, pool, opts)
	if err != nil || !exists {
		return 0, err
	}
	var v int64
	err = withProvider(ctx, pool, o, false, func(p *goose.Provider, _ *recordedOnly) error {
		var err error
		v, err = p.GetDBVersion(ctx)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("pgcoord migrations version: %w", err)
	}
	return v, nil
}

// LatestVersion is the highest migration version this build of pgcoord knows.
// Packages compare it with Version to tell a user to run migrations.
func LatestVersion() int64 {
	ms := allMigrations(DefaultSchema)
	return ms[len(ms)-1].Version
}

// existing fills opts' defaults, validates them and reports whether the
// schema exists: the opening of Down, Status and Version, which never create it.
func existing(ctx context.Context, pool *pgxpool.Pool, opts *Options) (Options, bool, error) {
	o := opts.withDefaults()
	if err := o.validate(); err != nil {
		return o, false, err
	}
	exists, err := schemaExists(ctx, pool, o.Schema)
	return o, exists, err
}

func schemaExists(ctx context.Context, pool *pgxpool.Pool, schema string) (bool, error) {
	var ok bool
	err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, schema).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("pgcoord migrations: look up schema %q: %w", schema, err)
	}
	return ok, nil
}

// withProvider opens one dedicated connection (outside the caller's pool, so
// changing search_path cannot leak into it), optionally creates the schema,
// and runs fn with a goose Provider bound to it.
func withProvider(ctx context.Context, pool *pgxpool.Pool, o Options, create bool, fn func(*goose.Provider, *recordedOnly) error) error {
	cfg := pool.Config().ConnConfig.Copy()
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	// The schema is validated to [a-z0-9_], so quoting it is enough.
	cfg.RuntimeParams["search_path"] = `"` + o.Schema + `"`
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	db.SetMaxOpenConns(2)

	if create {
		if err := createSchema(ctx, db, o.Schema); err != nil {
			return err
		}
	}

	rec := &recordedOnly{}
	locker, err := lock.NewPostgresSessionLocker(
		lock.WithLockID(lockkey.Key(o.Schema, lockkey.Migrations)),
		lock.WithLockTimeout(1, 600), // poll every second for up to 10 minutes
	)
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, FS,
		// Unquoted on purpose: goose splits "schema.table" itself, and the schema is validated to [a-z0-9_].
		goose.WithTableName(o.Schema+"."+VersionTable),
		goose.WithDisableGlobalRegistry(true),
		goose.WithGoMigrations(riverGoMigrations(o.Schema, rec)...),
		// A database set up with the goose CLI (SQL files only, versions 9+)
		// and River's own tool lacks goose rows 1-8: apply them out of order.
		// They are River's migrations, which are no-ops for versions River
		// already recorded, so this only writes the missing goose rows.
		goose.WithAllowOutofOrder(true),
		goose.WithSessionLocker(locker),
		goose.WithSlog(o.Logger),
	)
	if err != nil {
		return err
	}
	defer p.Close()
	// Rows written out of version order (see orderVersionRows) are put back in
	// order before goose reads them and after it wrote new ones.
	if err := orderVersionRows(ctx, db, o.Schema); err != nil {
		return err
	}
	if err := fn(p, rec); err != nil {
		return err
	}
	return orderVersionRows(ctx, db, o.Schema)
}

// orderVersionRows renumbers goose's version rows so that their ids follow
// version order. goose (both the Provider and the CLI) takes the applied row
// with the highest id as the current version and rolls back from there, so
// rows written out of order - River's versions 1-8 recorded by [Up] after the
// goose CLI applied 9 and up - would make it roll back River's 8 first and
// stop. Only applied rows are renumbered: a table that also holds "not
// applied" rows (written by goose versions before v3.16) keeps its history.
// The table is pgcoord's own (<schema>.goose_db_version), never the
// application's.
func orderVersionRows(ctx context.Context, db *sql.DB, schema string) error {
	table := pgx.Identifier{schema, VersionTable}.Sanitize()
	disordered := `SELECT EXISTS (SELECT 1 FROM ` + table + ` a JOIN ` + table + ` b ON a.id < b.id AND a.version_id > b.version_id)
		AND NOT EXISTS (SELECT 1 FROM ` + table + ` WHERE NOT is_applied)`
	var exists bool
	if err := db.QueryRowContext(ctx, `SELECT to_regclass($1) IS NOT NULL`, schema+"."+VersionTable).Scan(&exists); err != nil {
		return fmt.Errorf("order version rows: %w", err)
	}
	if !exists {
		return nil
	}
	var bad bool
	if err := db.QueryRowContext(ctx, disordered).Scan(&bad); err != nil || !bad {
		if err != nil {
			return fmt.Errorf("order version rows: %w", err)
		}
		return nil
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("order version rows: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op
	// SHARE ROW EXCLUSIVE: no other migrator inserts or deletes a row
	// meanwhile; check again under the lock.
	if _, err := tx.ExecContext(ctx, `LOCK TABLE `+table+` IN SHARE ROW EXCLUSIVE MODE`); err != nil {
		return fmt.Errorf("order version rows: %w", err)
	}
	if err := tx.QueryRowContext(ctx, disordered).Scan(&bad); err != nil || !bad {
		if err != nil {
			return fmt.Errorf("order version rows: %w", err)
		}
		return nil
	}
	stmts := []string{
		// Negate first so that the renumbering never collides with an existing id.
		`UPDATE ` + table + ` SET id = -id`,
		`UPDATE ` + table + ` t SET id = s.rn FROM (SELECT id, row_number() OVER (ORDER BY version_id, id DESC) AS rn FROM ` + table + `) s WHERE t.id = s.id`,
	}
	for _, q := range stmts {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("order version rows: %w", err)
		}
	}
	return tx.Commit()
}

// createSchema creates the schema under a transaction-scoped advisory lock, so
// instances starting together do not race on CREATE SCHEMA IF NOT EXISTS
// (which can fail with a unique violation when two run at once).
func createSchema(ctx context.Context, db *sql.DB, schema string) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("create schema %q: %w", schema, err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, lockkey.Key(schema, lockkey.Migrations)); err != nil {
		return fmt.Errorf("create schema %q: %w", schema, err)
	}
	// CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the
	// schema exists, so a role that owns only the schema could not migrate:
	// create it only when it is missing.
	var exists bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, schema).Scan(&exists); err != nil {
		return fmt.Errorf("create schema %q: %w", schema, err)
	}
	if !exists {
		if _, err := tx.ExecContext(ctx, `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize()); err != nil {
			return fmt.Errorf("create schema %q: %w", schema, err)
		}
	}
	return tx.Commit()
}

func dropVersionTableAndSchema(ctx context.Context, pool *pgxpool.Pool, o Options) error {
	if _, err := pool.Exec(ctx, `DROP TABLE IF EXISTS `+pgx.Identifier{o.Schema, VersionTable}.Sanitize()); err != nil {
		return fmt.Errorf("drop version table: %w", err)
	}
	var n int
	err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1`, o.Schema).Scan(&n)
	if err != nil {
		return fmt.Errorf("inspect schema %q: %w", o.Schema, err)
	}
	if n > 0 {
		o.Logger.WarnContext(ctx, "pgcoord: schema not dropped: it still holds objects that are not pgcoord's", slog.String("schema", o.Schema), slog.Int("objects", n))
		return nil
	}
	// RESTRICT (the default) refuses to drop anything we did not account for.
	if _, err := pool.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{o.Schema}.Sanitize()); err != nil {
		return fmt.Errorf("drop schema %q: %w", o.Schema, err)
	}
	return nil
}

func convertResults(logger *slog.Logger, res []*goose.MigrationResult, rec *recordedOnly) []Result {
	out := make([]Result, 0, len(res))
	for _, r := range res {
		if r == nil || r.Source == nil {
			continue
		}
		up := r.Direction == "up"
		recorded := up && rec.has(r.Source.Version)
		out = append(out, Result{Version: r.Source.Version, Name: sourceName(r.Source), Up: up, Duration: r.Duration, RecordedOnly: recorded})
		switch {
		case r.Error != nil:
		case recorded:
			logger.Info("pgcoord: migration recorded (River had applied it)", slog.Int64("version", r.Source.Version), slog.String("name", sourceName(r.Source)))
		default:
			logger.Info("pgcoord: migration applied", slog.Int64("version", r.Source.Version), slog.String("name", sourceName(r.Source)), slog.String("direction", r.Direction), slog.Duration("duration", r.Duration))
		}
	}
	return out
}

func sourceName(s *goose.Source) string {
	if s.Type == goose.TypeGo {
		return riverMigrationName(s.Version)
	}
	return s.Path
}
