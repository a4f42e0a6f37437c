package integration_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/migrations"
)

// The GRANTs below are the ones documented in docs/privileges.md; keep both
// in step.

// ownerGrants makes role the owner of the pgcoord schema and nothing else.
// %[1]s is the role, %[2]s the database.
const ownerGrants = `
GRANT CONNECT ON DATABASE %[2]s TO %[1]s;
CREATE SCHEMA pgcoord AUTHORIZATION %[1]s;
`

// runtimeGrants lets a role that owns nothing use a schema migrated by
// another role. %[1]s is the role, %[2]s the database.
const runtimeGrants = `
GRANT CONNECT ON DATABASE %[2]s TO %[1]s;
GRANT USAGE ON SCHEMA pgcoord TO %[1]s;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pgcoord TO %[1]s;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA pgcoord TO %[1]s;
`

// appTableGrants is the workload's own tables (the application's business,
// not pgcoord's).
const appTableGrants = `
GRANT USAGE ON SCHEMA public TO %[1]s;
GRANT SELECT, INSERT, UPDATE ON ` + counterTable + `, ` + counterLog + ` TO %[1]s;
`

// hardenedDB marks t parallel and gives it a database where PUBLIC may do
// nothing and pgcoord's schema does not exist, so only the explicit GRANTs
// count, with a superuser pool on it.
func hardenedDB(t *testing.T) (context.Context, *pgtest.DB, *pgxpool.Pool) {
	t.Helper()
	ctx, db := pgtest.Setup(t)
	admin := adminPool(t, db)
	_, err := admin.Exec(ctx, `
		DROP SCHEMA pgcoord CASCADE;
		REVOKE ALL ON DATABASE `+pgx.Identifier{db.Name}.Sanitize()+` FROM PUBLIC;
		REVOKE ALL ON SCHEMA public FROM PUBLIC;`)
	require.NoError(t, err)
	return ctx, db, admin
}

// newRole creates a LOGIN role with no other attribute (not a superuser, no
// CREATEDB, no CREATEROLE) and drops it, with what it owns, at cleanup.
func newRole(t *testing.T, db *pgtest.DB, admin *pgxpool.Pool, prefix string) string {
	t.Helper()
	role := prefix + "_" + strings.TrimPrefix(db.Name, "pgcoord_")
	// The password makes the test work on servers that do not trust
	// 127.0.0.1 (PGCOORD_TEST_DATABASE_URL); the local server ignores it.
	_, err := admin.Exec(context.Background(), `CREATE ROLE `+role+` LOGIN PASSWORD '`+rolePassword+`'`)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, err := pgx.Connect(ctx, db.URL)
		if err == nil {
			_, err = conn.Exec(ctx, `DROP OWNED BY `+role+` CASCADE`)
			_ = conn.Close(ctx)
		}
		if err == nil {
			_, err = admin.Exec(ctx, `DROP ROLE `+role)
		}
		if err != nil {
			t.Logf("drop role %s: %v", role, err)
		}
	})
	return role
}

// migrateAs runs the migrations as role, the schema's owner, which has no
// CREATE on the database: migrations.Up only creates a missing schema.
func migrateAs(t *testing.T, db *pgtest.DB, role string) {
	t.Helper()
	pool := poolAs(t, urlAs(t, db.URL, role))
	_, err := migrations.Up(context.Background(), pool, nil)
	require.NoError(t, err)
	pool.Close()
}

func grant(t *testing.T, admin *pgxpool.Pool, tmpl, role, dbName string) {
	t.Helper()
	q := strings.ReplaceAll(strings.ReplaceAll(tmpl, "%[1]s", role), "%[2]s", pgx.Identifier{dbName}.Sanitize())
	_, err := admin.Exec(context.Background(), q)
	require.NoError(t, err, q)
}

// rolePassword is the test roles' password (they live only as long as a test).
const rolePassword = "it-pw-9f3c"

// urlAs is db's URL with another user.
func urlAs(t *testing.T, dbURL, role string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	u.User = url.UserPassword(role, rolePassword)
	return u.String()
}

func poolAs(t *testing.T, u string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), u)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// TestPrivilegeSchemaOwner: a role that owns only the pgcoord schema runs the
// migrations itself and then the whole cluster workload.
func TestPrivilegeSchemaOwner(t *testing.T) {
	ctx, db, admin := hardenedDB(t)
	role := newRole(t, db, admin, "it_owner")
	grant(t, admin, ownerGrants, role, db.Name)
	setupCounter(t, db)
	grant(t, admin, appTableGrants, role, db.Name)

	roleURL := urlAs(t, db.URL, role)
	pool := poolAs(t, roleURL)
	var super bool
	require.NoError(t, pool.QueryRow(ctx, `SELECT rolsuper OR rolcreatedb OR rolcreaterole FROM pg_roles WHERE rolname = current_user`).Scan(&super))
	require.False(t, super)
	migrateAs(t, db, role)
	v, err := migrations.Version(ctx, pool, nil)
	require.NoError(t, err)
	require.Equal(t, migrations.LatestVersion(), v)

	runCluster(t, db, clusterOpts{URL: roleURL, AdminURL: db.Server.AdminURL(), Nodes: 2, Run: runDuration(8 * time.Second)})

	// The role owns every pgcoord object and nothing outside the schema.
	var outside []string
	rows, err := admin.Query(ctx, `
		SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE pg_get_userbyid(c.relowner) = $1 AND n.nspname NOT IN ('pgcoord', 'pg_toast')`, role)
	require.NoError(t, err)
	outside, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Empty(t, outside)

	// River's daily reindexer (REINDEX INDEX CONCURRENTLY) works for the owner.
	_, err = pool.Exec(ctx, `REINDEX INDEX CONCURRENTLY pgcoord.river_job_kind`)
	require.NoError(t, err)
}

// TestPrivilegeRuntimeRole: an owner role migrates; a second role that owns
// nothing runs the cluster workload with DML grants only.
func TestPrivilegeRuntimeRole(t *testing.T) {
	ctx, db, admin := hardenedDB(t)
	owner := newRole(t, db, admin, "it_mig")
	grant(t, admin, ownerGrants, owner, db.Name)
	migrateAs(t, db, owner)

	runtime := newRole(t, db, admin, "it_rt")
	// The runtime grants are given by the schema's owner, after migrating.
	ownerPool := poolAs(t, urlAs(t, db.URL, owner))
	q := strings.ReplaceAll(strings.ReplaceAll(runtimeGrants, "%[1]s", runtime), "%[2]s", pgx.Identifier{db.Name}.Sanitize())
	// GRANT CONNECT ON DATABASE needs the database's owner: the admin gives it.
	first, rest, _ := strings.Cut(strings.TrimSpace(q), "\n")
	_, err := admin.Exec(ctx, first)
	require.NoError(t, err)
	_, err = ownerPool.Exec(ctx, rest)
	require.NoError(t, err, rest)
	setupCounter(t, db)
	grant(t, admin, appTableGrants, runtime, db.Name)

	runtimeURL := urlAs(t, db.URL, runtime)
	runCluster(t, db, clusterOpts{URL: runtimeURL, AdminURL: db.Server.AdminURL(), Nodes: 2, Run: runDuration(8 * time.Second)})

	// What a runtime role cannot do: River's daily index maintenance, which
	// needs ownership (it logs the error and the queue keeps working), and
	// migrations.
	rt := poolAs(t, runtimeURL)
	_, err = rt.Exec(ctx, `REINDEX INDEX CONCURRENTLY pgcoord.river_job_kind`)
	require.ErrorContains(t, err, "42501")
	_, err = rt.Exec(ctx, `CREATE TABLE pgcoord.not_allowed (id int)`)
	require.ErrorContains(t, err, "42501")
}

// TestPrivilegeMigrateWithoutDatabaseCreate: the schema's owner should be able
// to migrate (and re-run migrations at every start) without CREATE on the
// database, since the schema already exists.
func TestPrivilegeMigrateWithoutDatabaseCreate(t *testing.T) {
	ctx, db, admin := hardenedDB(t)
	role := newRole(t, db, admin, "it_nocreate")
	grant(t, admin, ownerGrants, role, db.Name)
	_, err := migrations.Up(ctx, poolAs(t, urlAs(t, db.URL, role)), nil)
	require.NoError(t, err)
}
