package migrations

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"
	"sync"

	"github.com/pressly/goose/v3"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"
	"github.com/riverqueue/river/rivermigrate"
)

// riverVersions maps goose versions to the River migration versions they
// install. River's main line v0.51.2 has versions 1 to 8. When a River upgrade
// adds version 9, append {goose: <next free goose version>, river: 9};
// TestRiverVersionsCovered fails until then.
var riverVersions = []struct {
	goose int64
	river int
}{
	{1, 1}, {2, 2}, {3, 3}, {4, 4}, {5, 5}, {6, 6}, {7, 7}, {8, 8},
}

func riverMigrationName(gooseVersion int64) string {
	for _, v := range riverVersions {
		if v.goose == gooseVersion {
			return fmt.Sprintf("river_%03d", v.river)
		}
	}
	return fmt.Sprintf("go_%05d", gooseVersion)
}

func newRiverMigrator(db *sql.DB, schema string) (*rivermigrate.Migrator[*sql.Tx], error) {
	return rivermigrate.New(riverdatabasesql.New(db), &rivermigrate.Config{Schema: schema, Logger: discardLogger})
}

// riverGoMigrations builds one goose Go migration per River version. Each
// calls River's own migrator (Migrate, River's supported API, from the River
// module; River's SQL is never copied here) for exactly that version, so
// River's river_migration row commits with River's DDL in River's own
// transaction, exactly as `river migrate-up` would write it. goose records
// its row right after (a goose "no transaction" migration). If the process
// dies in between, River has the version and goose does not; the next run
// re-runs the goose migration, River's migrator finds the version applied
// and does nothing, and goose records it (on the way down the same holds in
// reverse). Each version in its own transaction is what River requires:
// some of its migrations need the previous one committed.
func riverGoMigrations(schema string, rec *recordedOnly) []*goose.Migration {
	out := make([]*goose.Migration, 0, len(riverVersions))
	for _, v := range riverVersions {
		up := func(ctx context.Context, db *sql.DB) error {
			m, err := newRiverMigrator(db, schema)
			if err != nil {
				return err
			}
			res, err := m.Migrate(ctx, rivermigrate.DirectionUp, &rivermigrate.MigrateOpts{TargetVersion: v.river})
			if err != nil {
				return fmt.Errorf("river migration %d up: %w", v.river, err)
			}
			if len(res.Versions) == 0 {
				rec.add(v.goose) // River's migrator had applied it: goose only records it
			}
			return nil
		}
		down := func(ctx context.Context, db *sql.DB) error {
			m, err := newRiverMigrator(db, schema)
			if err != nil {
				return err
			}
			target := v.river - 1
			if target == 0 {
				target = -1 // River's "all the way down"
			}
			if _, err := m.Migrate(ctx, rivermigrate.DirectionDown, &rivermigrate.MigrateOpts{TargetVersion: target}); err != nil {
				return fmt.Errorf("river migration %d down: %w", v.river, err)
			}
			return nil
		}
		out = append(out, goose.NewGoMigration(v.goose, &goose.GoFunc{RunDB: up}, &goose.GoFunc{RunDB: down}))
	}
	return out
}

// recordedOnly collects the goose versions of one run whose River migration
// was already applied (by River's own migrator), so the run only wrote
// goose's row.
type recordedOnly struct {
	mu sync.Mutex
	v  map[int64]bool // guarded by mu
}

func (r *recordedOnly) add(v int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.v == nil {
		r.v = map[int64]bool{}
	}
	r.v[v] = true
}

func (r *recordedOnly) has(v int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.v[v]
}

type knownMigration struct {
	Version int64
	name    string
}

// allMigrations lists River's Go migrations and the embedded SQL files in
// version order, without touching a database.
func allMigrations(string) []knownMigration {
	var out []knownMigration
	for _, v := range riverVersions {
		out = append(out, knownMigration{Version: v.goose, name: riverMigrationName(v.goose)})
	}
	entries, _ := fs.ReadDir(FS, ".")
	for _, e := range entries {
		v, err := goose.NumericComponent(e.Name())
		if err != nil {
			continue
		}
		out = append(out, knownMigration{Version: v, name: e.Name()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out
}

var discardLogger = slog.New(slog.DiscardHandler)
