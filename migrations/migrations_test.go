package migrations_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/migrations"
)

// emptyDB returns a database with nothing of pgcoord in it.
func emptyDB(t *testing.T) *pgxpool.Pool {
	t.Helper()
	db := pgtest.NewDB(t)
	_, err := migrations.Down(context.Background(), db.Pool, nil)
	require.NoError(t, err)
	return db.Pool
}

// migrated marks t parallel and gives it a context and a database with
// every migration applied.
func migrated(t *testing.T) (context.Context, *pgxpool.Pool) {
	t.Helper()
	t.Parallel()
	return context.Background(), pgtest.NewDB(t).Pool
}

// empty marks t parallel and gives it a context and a database without
// pgcoord's migrations; withSchema also creates the empty pgcoord schema,
// as a goose CLI user does first.
func empty(t *testing.T, withSchema bool) (context.Context, *pgxpool.Pool) {
	t.Helper()
	t.Parallel()
	ctx := context.Background()
	pool := emptyDB(t)
	if withSchema {
		_, err := pool.Exec(ctx, `CREATE SCHEMA pgcoord`)
		require.NoError(t, err)
	}
	return ctx, pool
}

// known is the number of migrations this build knows (River's and the SQL files).
func known(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	st, err := migrations.Status(context.Background(), pool, nil)
	require.NoError(t, err)
	return len(st)
}

func tableExists(t *testing.T, pool *pgxpool.Pool, schema, table string) bool {
	t.Helper()
	var ok bool
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2)`, schema, table).Scan(&ok))
	return ok
}

func schemaExists(t *testing.T, pool *pgxpool.Pool, schema string) bool {
	t.Helper()
	var ok bool
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, schema).Scan(&ok))
	return ok
}

func TestUpCreatesSchemaAndRiver(t *testing.T) {
	ctx, pool := empty(t, false)
	require.False(t, schemaExists(t, pool, "pgcoord"))

	res, err := migrations.Up(ctx, pool, nil)
	require.NoError(t, err)
	require.Len(t, res, known(t, pool))
	require.True(t, schemaExists(t, pool, "pgcoord"))
	for _, table := range []string{"river_job", "river_migration", "river_leader", "river_queue", "goose_db_version"} {
		require.True(t, tableExists(t, pool, "pgcoord", table), table)
	}
	require.False(t, tableExists(t, pool, "public", "river_job"), "nothing lands in public")

	// River itself agrees its schema is complete.
	m := riverMigrator(t, pool)
	vr, err := m.Validate(ctx, nil)
	require.NoError(t, err)
	require.True(t, vr.OK, "river validate: %v", vr.Messages)

	v, err := migrations.Version(ctx, pool, nil)
	require.NoError(t, err)
	require.Equal(t, migrations.LatestVersion(), v)

	for _, r := range res {
		require.False(t, r.RecordedOnly, "version %d", r.Version)
	}
	// Applying twice is a no-op.
	res, err = migrations.Up(ctx, pool, nil)
	require.NoError(t, err)
	require.Empty(t, res)
}

func TestDownToZeroRemovesEverything(t *testing.T) {
	ctx, pool := migrated(t)
	require.True(t, tableExists(t, pool, "pgcoord", "river_job"))

	n := known(t, pool)
	res, err := migrations.Down(ctx, pool, nil)
	require.NoError(t, err)
	require.Len(t, res, n)
	require.False(t, schemaExists(t, pool, "pgcoord"))

	// Down on nothing is a no-op; Version reports 0.
	_, err = migrations.Down(ctx, pool, nil)
	require.NoError(t, err)
	v, err := migrations.Version(ctx, pool, nil)
	require.NoError(t, err)
	require.Zero(t, v)
}

func TestDownKeepsSchemaWithForeignObjects(t *testing.T) {
	ctx, pool := migrated(t)
	_, err := pool.Exec(ctx, `CREATE TABLE pgcoord.users_own_table (id int)`)
	require.NoError(t, err)
	_, err = migrations.Down(ctx, pool, nil)
	require.NoError(t, err)
	require.True(t, tableExists(t, pool, "pgcoord", "users_own_table"))
	require.False(t, tableExists(t, pool, "pgcoord", "river_job"))
}

func TestDownToTargetAndBackUp(t *testing.T) {
	ctx, pool := migrated(t)
	_, err := migrations.Down(ctx, pool, &migrations.Options{TargetVersion: 1})
	require.NoError(t, err)
	v, err := migrations.Version(ctx, pool, nil)
	require.NoError(t, err)
	require.EqualValues(t, 1, v)
	require.True(t, tableExists(t, pool, "pgcoord", "river_migration"))
	require.False(t, tableExists(t, pool, "pgcoord", "river_job"))

	_, err = migrations.Up(ctx, pool, &migrations.Options{TargetVersion: 4})
	require.NoError(t, err)
	st, err := migrations.Status(ctx, pool, nil)
	require.NoError(t, err)
	require.Len(t, st, known(t, pool))
	for _, s := range st {
		require.Equal(t, s.Version <= 4, s.Applied, "version %d (%s)", s.Version, s.Name)
	}
	_, err = migrations.Up(ctx, pool, nil)
	require.NoError(t, err)
}

func TestCustomSchemaAndAppGooseTableUntouched(t *testing.T) {
	ctx, pool := empty(t, false)
	// The application's own goose table, in public.
	_, err := pool.Exec(ctx, `CREATE TABLE public.goose_db_version (id serial primary key, version_id bigint NOT NULL, is_applied boolean NOT NULL, tstamp timestamp DEFAULT now());
		INSERT INTO public.goose_db_version (version_id, is_applied) VALUES (0, true), (20240101, true)`)
	require.NoError(t, err)

	opts := &migrations.Options{Schema: "coord_custom"}
	_, err = migrations.Up(ctx, pool, opts)
	require.NoError(t, err)
	require.True(t, tableExists(t, pool, "coord_custom", "river_job"))
	require.True(t, tableExists(t, pool, "coord_custom", "goose_db_version"))
	require.False(t, schemaExists(t, pool, "pgcoord"))

	var n int
	var max int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*), max(version_id) FROM public.goose_db_version`).Scan(&n, &max))
	require.Equal(t, 2, n)
	require.EqualValues(t, 20240101, max)

	_, err = migrations.Down(ctx, pool, opts)
	require.NoError(t, err)
	require.False(t, schemaExists(t, pool, "coord_custom"))
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM public.goose_db_version`).Scan(&n))
	require.Equal(t, 2, n)
}

func TestConcurrentUp(t *testing.T) {
	ctx, pool := empty(t, false)
	errs := make(chan error, 3)
	for range 3 {
		go func() { _, err := migrations.Up(ctx, pool, nil); errs <- err }()
	}
	for range 3 {
		require.NoError(t, <-errs)
	}
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pgcoord.river_migration`).Scan(&n))
	require.Equal(t, 8, n)
}

func TestInvalidSchemaRejectedBeforeSQL(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	for _, bad := range []string{"Pgcoord", "x; DROP TABLE y", `a"b`, "1abc", "pg_catalog", "public", "has space", string(make([]byte, 64))} {
		for name, fn := range map[string]func() error{
			"up":      func() error { _, err := migrations.Up(ctx, db.Pool, &migrations.Options{Schema: bad}); return err },
			"down":    func() error { _, err := migrations.Down(ctx, db.Pool, &migrations.Options{Schema: bad}); return err },
			"status":  func() error { _, err := migrations.Status(ctx, db.Pool, &migrations.Options{Schema: bad}); return err },
			"version": func() error { _, err := migrations.Version(ctx, db.Pool, &migrations.Options{Schema: bad}); return err },
		} {
			err := fn()
			require.ErrorIs(t, err, migrations.ErrInvalidSchema, "%s %q", name, bad)
		}
	}
	// A closed pool proves no SQL ran: validation fails first.
	closed := db.NewPool(t, nil)
	closed.Close()
	_, err := migrations.Up(ctx, closed, &migrations.Options{Schema: "Bad"})
	require.ErrorIs(t, err, migrations.ErrInvalidSchema)
	_, err = migrations.Up(ctx, db.Pool, &migrations.Options{TargetVersion: -1})
	require.Error(t, err)
	require.False(t, errors.Is(err, migrations.ErrInvalidSchema))
}

// A user who runs the SQL files with the goose CLI (search_path set to the
// schema, goose's table inside it) and River's migrations with River's own
// tool ends up with the same objects, and can switch to migrations.Up later:
// it records River's versions without re-running them.
func TestGooseCLIStyleThenUp(t *testing.T) {
	ctx, pool := empty(t, true)

	// What `goose -dir migrations/sql -table pgcoord.goose_db_version postgres "…?search_path=pgcoord" up` does.
	p := gooseCLI(t, pool)
	res, err := p.Up(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, res, "the SQL files apply on their own")
	for _, table := range []string{"messages", "cache_entries", "locks"} {
		require.True(t, tableExists(t, pool, "pgcoord", table), table)
	}

	// What River's own migrator does (`river migrate-up` with the schema).
	riverUp(t, pool)

	// Switching to the Go API: River's goose versions are recorded, nothing breaks.
	mres, err := migrations.Up(ctx, pool, nil)
	require.NoError(t, err)
	require.Len(t, mres, 8)
	for _, r := range mres {
		require.True(t, r.RecordedOnly, "version %d was only recorded, River had applied it", r.Version)
	}
	st, err := migrations.Status(ctx, pool, nil)
	require.NoError(t, err)
	for _, s := range st {
		require.True(t, s.Applied, "version %d (%s)", s.Version, s.Name)
	}
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pgcoord.river_migration`).Scan(&n))
	require.Equal(t, 8, n, "River's versions were not applied twice")
}

// gooseCLI is what the goose CLI sees: the SQL files only (versions 9+), goose's
// table in the schema, search_path set to the schema.
func gooseCLI(t *testing.T, pool *pgxpool.Pool) *goose.Provider {
	t.Helper()
	cfg := pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["search_path"] = "pgcoord"
	sqlDB := stdlib.OpenDB(*cfg)
	t.Cleanup(func() { _ = sqlDB.Close() })
	p, err := goose.NewProvider(goose.DialectPostgres, sqlDB, migrations.FS,
		goose.WithTableName("pgcoord.goose_db_version"), goose.WithDisableGlobalRegistry(true))
	require.NoError(t, err)
	return p
}

// riverMigrator is River's own migrator on the pgcoord schema.
func riverMigrator(t *testing.T, pool *pgxpool.Pool) *rivermigrate.Migrator[pgx.Tx] {
	t.Helper()
	rm, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: "pgcoord"})
	require.NoError(t, err)
	return rm
}

// riverUp runs River's own migrator up (`river migrate-up` with the schema).
func riverUp(t *testing.T, pool *pgxpool.Pool) *rivermigrate.Migrator[pgx.Tx] {
	t.Helper()
	rm := riverMigrator(t, pool)
	_, err := rm.Migrate(context.Background(), rivermigrate.DirectionUp, nil)
	require.NoError(t, err)
	return rm
}

// downAll runs migrations.Down to the end: goose's table and the then empty
// pgcoord schema are gone.
func downAll(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	_, err := migrations.Down(context.Background(), pool, nil)
	require.NoError(t, err)
	require.False(t, schemaExists(t, pool, "pgcoord"))
}

// gooseCLIVersion is the version the goose CLI reports (`goose version`): the
// applied row with the highest id, which is the order rows were written in.
func gooseCLIVersion(t *testing.T, pool *pgxpool.Pool) int64 {
	t.Helper()
	var v int64
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT version_id FROM pgcoord.goose_db_version WHERE is_applied ORDER BY id DESC LIMIT 1`).Scan(&v))
	return v
}

func riverVersions(t *testing.T, pool *pgxpool.Pool) []int {
	t.Helper()
	rm := riverMigrator(t, pool)
	ms, err := rm.ExistingVersions(context.Background())
	require.NoError(t, err)
	out := []int{}
	for _, m := range ms {
		out = append(out, m.Version)
	}
	return out
}

func upTo(n int) []int {
	out := []int{}
	for i := 1; i <= n; i++ {
		out = append(out, i)
	}
	return out
}

// The documented switch (goose CLI for the SQL files, River's migrator for
// River's tables, then migrations.Up) writes goose rows 1-8 after 9-16. Rolling
// back must still go in version order, with migrations.Down and with the goose
// CLI.
func TestGooseCLIThenUpThenDown(t *testing.T) {
	ctx, pool := empty(t, true)
	_, err := gooseCLI(t, pool).Up(ctx)
	require.NoError(t, err)
	riverUp(t, pool)
	_, err = migrations.Up(ctx, pool, nil)
	require.NoError(t, err)
	require.EqualValues(t, 16, gooseCLIVersion(t, pool), "the goose CLI sees the latest version")

	// pgcoord migrate down --to 10
	res, err := migrations.Down(ctx, pool, &migrations.Options{TargetVersion: 10})
	require.NoError(t, err)
	require.Len(t, res, 6)
	require.EqualValues(t, []int64{16, 15, 14, 13, 12, 11}, []int64{res[0].Version, res[1].Version, res[2].Version, res[3].Version, res[4].Version, res[5].Version})
	require.False(t, tableExists(t, pool, "pgcoord", "instances"), "version 13 rolled back")
	require.False(t, tableExists(t, pool, "pgcoord", "locks"), "version 11 rolled back")
	require.True(t, tableExists(t, pool, "pgcoord", "cache_entries"))

	// pgcoord migrate down --to 7: 10, 9 and River's 8, in that order.
	res, err = migrations.Down(ctx, pool, &migrations.Options{TargetVersion: 7})
	require.NoError(t, err)
	require.Len(t, res, 3)
	require.EqualValues(t, []int64{10, 9, 8}, []int64{res[0].Version, res[1].Version, res[2].Version})
	require.False(t, tableExists(t, pool, "pgcoord", "messages"))
	require.Equal(t, upTo(7), riverVersions(t, pool))
	v, err := migrations.Version(ctx, pool, nil)
	require.NoError(t, err)
	require.EqualValues(t, 7, v)

	// Back up, then the goose CLI rolls back its own files (16 to 9) and stops
	// at River's 8, which it does not know.
	_, err = migrations.Up(ctx, pool, nil)
	require.NoError(t, err)
	require.EqualValues(t, 16, gooseCLIVersion(t, pool))
	gres, err := gooseCLI(t, pool).DownTo(ctx, 8)
	require.NoError(t, err)
	require.Len(t, gres, 8)
	require.EqualValues(t, 8, gooseCLIVersion(t, pool))
	require.False(t, tableExists(t, pool, "pgcoord", "messages"))

	// And migrations.Down removes the rest.
	downAll(t, pool)
}

// A user who never switches (goose CLI for the SQL files, River's migrator for
// River's tables) goes down with the same two tools.
func TestGooseCLIAndRiverMigratorDown(t *testing.T) {
	ctx, pool := empty(t, true)
	cli := gooseCLI(t, pool)
	_, err := cli.Up(ctx)
	require.NoError(t, err)
	rm := riverUp(t, pool)

	_, err = cli.DownTo(ctx, 10)
	require.NoError(t, err)
	require.False(t, tableExists(t, pool, "pgcoord", "locks"))
	_, err = cli.DownTo(ctx, 0)
	require.NoError(t, err)
	require.False(t, tableExists(t, pool, "pgcoord", "messages"))
	_, err = rm.Migrate(ctx, rivermigrate.DirectionDown, &rivermigrate.MigrateOpts{TargetVersion: -1})
	require.NoError(t, err)
	require.False(t, tableExists(t, pool, "pgcoord", "river_job"))

	// migrations.Down then removes goose's table and the empty schema.
	downAll(t, pool)
}

// The goose CLI run without ?search_path=<schema> must not put pgcoord's tables
// in public (where pgcoord never looks), nor drop an application's own
// public.messages on the way down.
func TestGooseCLIWithoutSearchPathRefuses(t *testing.T) {
	ctx, pool := empty(t, true)
	noPath := func() *goose.Provider {
		sqlDB := stdlib.OpenDB(*pool.Config().ConnConfig.Copy())
		t.Cleanup(func() { _ = sqlDB.Close() })
		p, err := goose.NewProvider(goose.DialectPostgres, sqlDB, migrations.FS,
			goose.WithTableName("pgcoord.goose_db_version"), goose.WithDisableGlobalRegistry(true))
		require.NoError(t, err)
		return p
	}
	_, err := noPath().Up(ctx)
	require.ErrorContains(t, err, "search_path must start with pgcoord's schema")
	for _, table := range []string{"messages", "cache_entries", "locks"} {
		require.False(t, tableExists(t, pool, "public", table), table)
	}

	// Installed correctly; the application has its own public.messages.
	_, err = gooseCLI(t, pool).Up(ctx)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `CREATE TABLE public.messages (id int)`)
	require.NoError(t, err)
	_, err = noPath().DownTo(ctx, 8)
	require.ErrorContains(t, err, "search_path must start with pgcoord's schema")
	require.True(t, tableExists(t, pool, "public", "messages"), "the application's table is untouched")
	require.True(t, tableExists(t, pool, "pgcoord", "locks"))
}

// River's own migrator and rivermigrate.Validate agree with pgcoord's record
// after every single step up and down.
func TestRiverAgreesAtEveryStep(t *testing.T) {
	ctx, pool := empty(t, false)
	rm := riverMigrator(t, pool)
	latest := migrations.LatestVersion()
	agree := func(v int64) {
		t.Helper()
		want := upTo(int(min(v, 8)))
		if v == 0 {
			require.False(t, tableExists(t, pool, "pgcoord", "river_migration"), "step %d", v)
			return
		}
		require.Equal(t, want, riverVersions(t, pool), "step %d", v)
		vr, err := rm.Validate(ctx, nil)
		require.NoError(t, err)
		require.Equal(t, v >= 8, vr.OK, "step %d: %v", v, vr.Messages)
		got, err := migrations.Version(ctx, pool, nil)
		require.NoError(t, err)
		require.Equal(t, v, got)
	}
	for v := int64(1); v <= latest; v++ {
		_, err := migrations.Up(ctx, pool, &migrations.Options{TargetVersion: v})
		require.NoError(t, err)
		agree(v)
	}
	for v := latest - 1; v >= 0; v-- {
		_, err := migrations.Down(ctx, pool, &migrations.Options{TargetVersion: v})
		require.NoError(t, err)
		agree(v)
	}
}
