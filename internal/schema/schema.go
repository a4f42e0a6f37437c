package schema

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"
)

// Default is the schema that holds pgcoord's tables when no other is configured.
const Default = "pgcoord"

// VersionTable is the name of goose's version table inside the schema.
const VersionTable = "goose_db_version"

// Version is the schema version this build of pgcoord expects: every
// migration version from 1 to Version applied, none above. Package
// migrations has a test that fails when it differs from its newest migration.
const Version int64 = 16

// RiverVersion is the newest River migration (main line) this build installs,
// as goose versions 1 to RiverVersion.
const RiverVersion = 8

// MinServerVersion is the oldest PostgreSQL server supported, as
// server_version_num (14.0).
const MinServerVersion = 140000

// ErrInvalid is returned (wrapped) when a schema name is not a plain
// lower-case PostgreSQL identifier.
var ErrInvalid = errors.New("pgcoord: invalid schema name")

// ErrOutdated is the error (see [VersionError]) of a database whose schema
// lacks migrations this build needs.
var ErrOutdated = errors.New("pgcoord: database schema is outdated")

// ErrTooNew is the error (see [VersionError]) of a database migrated by a
// newer pgcoord.
var ErrTooNew = errors.New("pgcoord: database schema is newer than this pgcoord")

// ErrServerTooOld is returned (wrapped) when the server is older than
// [MinServerVersion].
var ErrServerTooOld = errors.New("pgcoord: PostgreSQL server too old")

var nameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// Validate reports whether name is a plain schema name: 1 to 63 bytes of
// lower-case ASCII letters, digits and underscores, not starting with a
// digit, and not a reserved "pg_" name. Every package of pgcoord validates
// its schema with it before any SQL runs, so schema names never need quoting
// rules beyond [pgx.Identifier]. Errors never quote a name longer than 63 bytes.
func Validate(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalid)
	case len(name) > 63:
		return fmt.Errorf("%w: %d bytes, longer than 63", ErrInvalid, len(name))
	case !nameRE.MatchString(name):
		return fmt.Errorf("%w: %q must match %s", ErrInvalid, name, nameRE)
	case len(name) >= 3 && name[:3] == "pg_":
		return fmt.Errorf("%w: %q starts with the reserved prefix pg_", ErrInvalid, name)
	}
	return nil
}

// ValidatePgcoord is [Validate] plus the rule for pgcoord's own schema: not
// public, which is the application's (pgcoord's table names, such as
// messages and locks, would collide with its own).
func ValidatePgcoord(name string) error {
	if err := Validate(name); err != nil {
		return err
	}
	if name == "public" {
		return fmt.Errorf("%w: public is the application's schema; pgcoord needs its own", ErrInvalid)
	}
	return nil
}

// VersionError says how the database's schema differs from what this build
// expects. errors.Is(err, ErrOutdated) or errors.Is(err, ErrTooNew) tells
// which.
type VersionError struct {
	// Schema is the schema checked.
	Schema string
	// Database is the highest migration version applied (0 for none).
	Database int64
	// Expected is [Version].
	Expected int64
	// Missing lists versions from 1 to Expected that are not applied.
	Missing []int64
	// RiverBehind is true when every version is applied in goose's table but
	// River's own record (river_migration) is behind [RiverVersion], as after
	// "river migrate-down"; RiverDatabase is then River's newest version.
	RiverBehind   bool
	RiverDatabase int
	// Err is ErrOutdated or ErrTooNew.
	Err error
}

func (e *VersionError) Error() string {
	if errors.Is(e.Err, ErrTooNew) {
		return fmt.Sprintf("pgcoord: schema %q is at version %d, newer than this pgcoord knows (version %d): upgrade pgcoord, or roll back with the newer pgcoord's \"pgcoord migrate down --to %d\"",
			e.Schema, e.Database, e.Expected, e.Expected)
	}
	const fix = `run "pgcoord migrate up" (or migrations.Up, or app.Config.AutoMigrate)`
	if e.RiverBehind {
		return fmt.Sprintf("pgcoord: schema %q is at version %d but River's own record (river_migration) is at %d, this pgcoord needs River's %d: %s",
			e.Schema, e.Database, e.RiverDatabase, RiverVersion, fix)
	}
	return fmt.Sprintf("pgcoord: schema %q is at version %d, this pgcoord needs version %d (missing %s): %s",
		e.Schema, e.Database, e.Expected, versionList(e.Missing), fix)
}

// Unwrap returns ErrOutdated or ErrTooNew.
func (e *VersionError) Unwrap() error { return e.Err }

func versionList(vs []int64) string {
	if len(vs) == 0 {
		return "none"
	}
	// Runs of consecutive versions read as a range: "1-8, 11".
	out := ""
	for i := 0; i < len(vs); {
		j := i
		for j+1 < len(vs) && vs[j+1] == vs[j]+1 {
			j++
		}
		if out != "" {
			out += ", "
		}
		if j == i {
			out += fmt.Sprint(vs[i])
		} else {
			out += fmt.Sprintf("%d-%d", vs[i], vs[j])
		}
		i = j + 1
	}
	return out
}

// Querier is what Check needs: a *pgxpool.Pool, *pgx.Conn or pgx.Tx.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Check verifies, in two short queries, that the server is at least
// [MinServerVersion] and that schema holds exactly the migrations this build
// expects: versions 1 to [Version] applied in goose's version table, none
// newer, and River's own record (river_migration) at [RiverVersion]. It
// returns an error wrapping [ErrInvalid], [ErrServerTooOld], or a
// *[VersionError] wrapping [ErrOutdated] or [ErrTooNew].
func Check(ctx context.Context, db Querier, schema string) error {
	if err := ValidatePgcoord(schema); err != nil {
		return err
	}
	var (
		server          int
		hasGoose, hasRv bool
	)
	err := db.QueryRow(ctx, `SELECT current_setting('server_version_num')::int,
		to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL`,
		pgx.Identifier{schema, VersionTable}.Sanitize(), pgx.Identifier{schema, "river_migration"}.Sanitize(),
	).Scan(&server, &hasGoose, &hasRv)
	if err != nil {
		return fmt.Errorf("pgcoord: check schema %q: %w", schema, err)
	}
	if err := checkServer(server); err != nil {
		return err
	}
	var (
		applied []int64
		river   int
	)
	if hasGoose {
		// The newest row of each version says whether it is applied (goose
		// before v3.16 wrote "not applied" rows on the way down).
		q := `SELECT coalesce(array_agg(version_id ORDER BY version_id), '{}') FROM (
			SELECT DISTINCT ON (version_id) version_id, is_applied FROM ` + pgx.Identifier{schema, VersionTable}.Sanitize() + `
			ORDER BY version_id, id DESC) v WHERE is_applied AND version_id > 0`
		if hasRv {
			q = `SELECT (` + q + `), (SELECT coalesce(max(version), 0) FROM ` + pgx.Identifier{schema, "river_migration"}.Sanitize() + `)`
		} else {
			q = `SELECT (` + q + `), 0`
		}
		if err := db.QueryRow(ctx, q).Scan(&applied, &river); err != nil {
			return fmt.Errorf("pgcoord: check schema %q: %w", schema, err)
		}
	}
	return compare(schema, applied, river)
}

// compare judges the applied goose versions and River's newest version.
func compare(schema string, applied []int64, river int) error {
	e := &VersionError{Schema: schema, Expected: Version}
	have := map[int64]bool{}
	for _, v := range applied {
		have[v] = true
		e.Database = max(e.Database, v)
	}
	if e.Database > Version {
		e.Err = ErrTooNew
		return e
	}
	for v := int64(1); v <= Version; v++ {
		if !have[v] {
			e.Missing = append(e.Missing, v)
		}
	}
	if len(e.Missing) == 0 && river < RiverVersion {
		e.RiverBehind, e.RiverDatabase = true, river
	}
	if len(e.Missing) > 0 || e.RiverBehind {
		e.Err = ErrOutdated
		return e
	}
	return nil
}

func checkServer(versionNum int) error {
	if versionNum < MinServerVersion {
		return fmt.Errorf("%w: server_version_num is %d, pgcoord needs PostgreSQL %d or newer", ErrServerTooOld, versionNum, MinServerVersion/10000)
	}
	return nil
}
