package pgcoordtest

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// EnvDatabaseURL names the environment variable that points the tests at an
// existing server instead of starting one. Its role must be allowed to create
// databases.
const EnvDatabaseURL = pgtest.EnvDatabaseURL

// Main is TestMain for a package that uses pgcoordtest: it finds or starts
// the server (see the package documentation), runs the tests, stops the
// server it started, and exits with the tests' code (2 when no server could
// be found or started).
func Main(m *testing.M) {
	os.Exit(pgtest.Run(m, nil))
}

// DB is one test's own database, migrated to pgcoord's current schema.
type DB struct {
	// URL connects to this database (a postgres:// URL).
	URL string
	// Name is the database's name.
	Name string
	// Schema holds pgcoord's tables. It is the default schema, "pgcoord".
	Schema string
	// Pool is a pool to this database, closed when the test ends.
	Pool *pgxpool.Pool

	db *pgtest.DB
}

// NewDB creates a database for this test, with pgcoord's migrations applied,
// and drops it when the test ends. Without [Main] the server is started on
// first use and not stopped by this package (a throwaway local server still
// stops when the test binary exits).
func NewDB(tb testing.TB) *DB {
	tb.Helper()
	d := pgtest.NewDB(tb)
	return &DB{URL: d.URL, Name: d.Name, Schema: d.Schema, Pool: d.Pool, db: d}
}

// NewPool opens another pool to the database whose connections carry
// applicationName (when not empty), closed when the test ends.
func (d *DB) NewPool(tb testing.TB, applicationName string) *pgxpool.Pool {
	tb.Helper()
	return d.db.NewPool(tb, &pgtest.PoolOptions{AppName: applicationName})
}

// TerminateBackends ends, with pg_terminate_backend, every session of this
// database whose application_name is applicationName, and returns how many
// it ended. It connects as the server's administrative role, so it can end
// any session of the database.
func (d *DB) TerminateBackends(ctx context.Context, applicationName string) (int, error) {
	if applicationName == "" {
		// pgtest reads "" as "every session": never what a caller of a
		// named cut means.
		return 0, nil
	}
	return d.db.TerminateBackends(ctx, applicationName)
}
