package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/migrations"
	"github.com/pgcoord/pgcoord/pgcache"
	"github.com/pgcoord/pgcoord/queue"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestHelpAndUnknownCommand(t *testing.T) {
	t.Parallel()
	code, out, _ := runCLI(t, "--help")
	require.Zero(t, code)
	for _, cmd := range []string{"migrate", "demo", "inspect", "bench"} {
		require.Contains(t, out, "pgcoord "+cmd)
	}
	code, _, errOut := runCLI(t, "frobnicate")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `unknown command "frobnicate"`)
	for _, cmd := range []string{"migrate", "inspect", "bench"} {
		code, _, errOut := runCLI(t, cmd, "--help")
		require.Zero(t, code, cmd)
		require.Contains(t, errOut, "Usage: pgcoord "+cmd, cmd)
	}
}

func TestMigrateAgainstRealDatabase(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)

	code, _, errOut := runCLI(t, "migrate", "down", "--database-url", db.URL)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "needs --to N")

	code, out, errOut := runCLI(t, "migrate", "down", "--to", "0", "--database-url", db.URL)
	require.Zero(t, code, errOut)
	require.Contains(t, out, "river_001")

	code, out, errOut = runCLI(t, "migrate", "status", "--database-url", db.URL)
	require.Equal(t, 3, code, "pending migrations fail CI")
	require.Contains(t, out, "pending")
	require.NotContains(t, out, "20") // no applied timestamps
	require.Contains(t, errOut, "is at version 0, this pgcoord needs version 16")
	code, out, _ = runCLI(t, "migrate", "status", "--json", "--database-url", db.URL)
	require.Equal(t, 3, code)
	var st struct {
		State           string  `json:"state"`
		DatabaseVersion int64   `json:"database_version"`
		ExpectedVersion int64   `json:"expected_version"`
		Pending         []int64 `json:"pending"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	require.Equal(t, "pending", st.State)
	require.EqualValues(t, 0, st.DatabaseVersion)
	require.EqualValues(t, 16, st.ExpectedVersion)
	require.Len(t, st.Pending, 16)

	code, out, errOut = runCLI(t, "migrate", "up", "--database-url", db.URL)
	require.Zero(t, code, errOut)
	require.Contains(t, out, "river_008")
	code, out, _ = runCLI(t, "migrate", "up", "--database-url", db.URL)
	require.Zero(t, code)
	require.Contains(t, out, "nothing to apply")

	code, out, _ = runCLI(t, "migrate", "status", "--database-url", db.URL)
	require.Zero(t, code)
	require.NotContains(t, out, "pending")
	code, out, _ = runCLI(t, "migrate", "status", "--json", "--database-url", db.URL)
	require.Zero(t, code)
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	require.Equal(t, "current", st.State)
	require.EqualValues(t, 16, st.DatabaseVersion)
	require.Empty(t, st.Pending)

	// A newer pgcoord's migration: status fails too.
	_, err := db.Pool.Exec(context.Background(), `INSERT INTO pgcoord.goose_db_version (version_id, is_applied) VALUES (17, true)`)
	require.NoError(t, err)
	code, out, _ = runCLI(t, "migrate", "status", "--json", "--database-url", db.URL)
	require.Equal(t, 3, code)
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	require.Equal(t, "too_new", st.State)
	require.EqualValues(t, 17, st.DatabaseVersion)

	code, _, errOut = runCLI(t, "migrate", "up", "--database-url", db.URL, "--schema", "Bad;Schema")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "invalid schema name")
}

// migrate up on a database where River's own migrator installed River's
// tables says it only recorded River's versions, not that it applied them.
func TestMigrateUpSaysRecordedOnly(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	_, err := migrations.Down(ctx, db.Pool, nil)
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `CREATE SCHEMA pgcoord`)
	require.NoError(t, err)
	rm, err := rivermigrate.New(riverpgxv5.New(db.Pool), &rivermigrate.Config{Schema: "pgcoord"})
	require.NoError(t, err)
	_, err = rm.Migrate(ctx, rivermigrate.DirectionUp, nil)
	require.NoError(t, err)

	code, out, errOut := runCLI(t, "migrate", "up", "--database-url", db.URL)
	require.Zero(t, code, errOut)
	require.Regexp(t, `(?m)^record\s+1\s+river_001\s+already applied by River's migrator$`, out)
	require.NotRegexp(t, `(?m)^up\s+1\s`, out)
	require.Regexp(t, `(?m)^up\s+9\s+00009_messages.sql`, out)
}

// A goose CLI user gets the SQL files without digging in the module cache.
func TestMigrateSQLWritesFiles(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "pgcoord-sql")
	code, out, errOut := runCLI(t, "migrate", "sql", "--out", dir)
	require.Zero(t, code, errOut)
	entries, err := fs.Glob(migrations.FS, "*.sql")
	require.NoError(t, err)
	require.NotEmpty(t, entries)
	for _, name := range entries {
		want, err := fs.ReadFile(migrations.FS, name)
		require.NoError(t, err)
		got, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		require.Equal(t, want, got, name)
		require.Contains(t, out, name)
	}
	code, _, errOut = runCLI(t, "migrate", "sql")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "needs --out DIR")
}

func TestNoDatabaseSaysWhatToDo(t *testing.T) {
	t.Setenv("PGCOORD_DATABASE_URL", "")
	code, _, errOut := runCLI(t, "inspect")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "set PGCOORD_DATABASE_URL")
}

func TestInspectShowsLiveState(t *testing.T) {
	ctx, db := pgtest.Setup(t)

	locks, err := advisorylock.New(db.Pool, &advisorylock.Config{AppName: "shop", InstanceID: "node-a"})
	require.NoError(t, err)
	require.NoError(t, locks.Start(ctx))
	t.Cleanup(func() { _ = locks.Close(context.Background()) })
	l, err := locks.Acquire(ctx, "orders:42", time.Hour)
	require.NoError(t, err)

	mgr, err := pgcache.NewManager(db.Pool, &pgcache.ManagerConfig{AppName: "shop"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = mgr.Close(context.Background()) })
	c, err := mgr.CreateCache(ctx, pgcache.CacheConfig{Name: "auth"})
	require.NoError(t, err)
	require.NoError(t, c.Set(ctx, "token", "abc", 0))

	q, err := queue.New(db.Pool, &queue.Config{AppName: "shop", InstanceID: "node-a"})
	require.NoError(t, err)
	_, err = q.Publish(ctx, "emails", map[string]string{"to": "x"}, nil)
	require.NoError(t, err)

	ps, err := listen.New(db.Pool, &listen.Config{AppName: "shop", InstanceID: "node-a"})
	require.NoError(t, err)
	require.NoError(t, ps.Start(ctx))
	t.Cleanup(func() { _ = ps.Close(context.Background()) })
	require.NoError(t, ps.Publish(ctx, "orders.changed", 42, nil))

	// A whole instance: the registry and its named connections.
	inst, err := app.New(ctx, app.Config{Name: "shop", Pool: db.Pool, InstanceID: "node-b"})
	require.NoError(t, err)
	require.NoError(t, inst.Start(ctx))
	t.Cleanup(func() { _ = inst.Stop(context.Background()) })

	code, out, errOut := runCLI(t, "inspect", "--json", "--database-url", db.URL)
	require.Zero(t, code, errOut)
	var rep Report
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.Len(t, rep.Locks, 1)
	require.Equal(t, "orders:42", rep.Locks[0].Key)
	require.Equal(t, "node-a", rep.Locks[0].Owner)
	require.Equal(t, l.Token(), rep.Locks[0].Token)
	require.NotNil(t, rep.Locks[0].ExpiresIn)
	require.Len(t, rep.Queues, 1)
	require.Equal(t, "emails", rep.Queues[0].Channel)
	require.Equal(t, "available", rep.Queues[0].State)
	require.Len(t, rep.Caches, 1)
	require.Equal(t, "shop", rep.Caches[0].App)
	require.EqualValues(t, 1, rep.Caches[0].Entries)
	require.Len(t, rep.Channels, 1)
	require.Equal(t, "orders.changed", rep.Channels[0].Channel)
	require.NotEmpty(t, rep.Listens, "the PubSub's LISTEN session is visible")
	require.EqualValues(t, migrations.LatestVersion(), rep.SchemaVersion)
	require.Equal(t, rep.ExpectedSchemaVersion, rep.SchemaVersion)
	require.Len(t, rep.Instances, 1)
	require.Equal(t, "node-b", rep.Instances[0].ID)
	require.True(t, rep.Instances[0].Alive)
	roles := map[string]bool{}
	for _, c := range rep.Connections {
		if c.InstanceID == "node-b" {
			require.Equal(t, "shop", c.App)
			roles[c.Role] = true
		}
	}
	for _, r := range []string{"listen", "lock-liveness", "queue-liveness"} {
		require.True(t, roles[r], "connection role %s of node-b in %+v", r, rep.Connections)
	}

	// Released locks disappear from the report; the table form prints.
	require.NoError(t, l.Release(ctx))
	code, out, _ = runCLI(t, "inspect", "--database-url", db.URL)
	require.Zero(t, code)
	require.Contains(t, out, "LOCKS HELD")
	require.NotContains(t, out, "orders:42")
	require.True(t, strings.Contains(out, "emails"))
}

func TestBenchJSONRows(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	code, out, errOut := runCLI(t, "bench", "lock", "--json", "--ops", "40", "--database-url", db.URL)
	require.Zero(t, code, errOut)
	require.Contains(t, errOut, "pgcoord bench: server PostgreSQL ", "every run says which server and durability it measured")
	require.Contains(t, errOut, " synchronous_commit=")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	names := map[string]bool{}
	for _, line := range lines {
		var row struct {
			Name         string   `json:"name"`
			Pgcoord      *float64 `json:"pgcoord"`
			Baseline     *float64 `json:"baseline"`
			BaselineName string   `json:"baseline_name"`
			Unit         string   `json:"unit"`
			CostRatio    *float64 `json:"cost_ratio"`
		}
		require.NoError(t, json.Unmarshal([]byte(line), &row), line)
		require.NotNil(t, row.Pgcoord, line)
		require.NotNil(t, row.Baseline, line)
		require.NotNil(t, row.CostRatio, line)
		require.Positive(t, *row.Pgcoord, line)
		require.NotEmpty(t, row.BaselineName, line)
		require.Contains(t, []string{"us", "ops/s", "share"}, row.Unit, line)
		names[row.Name] = true
	}
	require.True(t, names["lock.uncontended.c1"], out)
	require.True(t, names["lock.handoff.c8"], out)

	code, _, errOut = runCLI(t, "bench", "nonsense", "--database-url", db.URL)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, `unknown suite "nonsense"`)
}

// The shipped CLI depends on no teaching code: examples/* may change freely.
// (The demo's scenario plugins live in internal/demo.)
func TestNoExamplesInDeps(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(goTool(t), "list", "-deps", ".").CombinedOutput()
	require.NoError(t, err, string(out))
	deps := strings.Fields(string(out))
	for _, dep := range deps {
		require.False(t, strings.HasPrefix(dep, "github.com/pgcoord/pgcoord/examples/"), "cmd/pgcoord depends on %s", dep)
	}
	require.True(t, slices.Contains(deps, "github.com/pgcoord/pgcoord/internal/demo/authcache"), "the demo's plugins are found")
}
