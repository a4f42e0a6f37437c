package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/migrations"
)

const migrateUsage = `Usage: pgcoord migrate up|down|status [flags]

  up       apply every pending migration (River's tables and pgcoord's)
  down     roll back: needs --to N (0 removes everything pgcoord created)
  status   list migrations and whether each is applied; exits 3 when any is
           pending or the database was migrated by a newer pgcoord (for CI)
  sql      write pgcoord's goose SQL files (versions 9+) to --out DIR, for the goose CLI

Flags:
`

func cmdMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, flags := newCommand("migrate", migrateUsage, stderr)
	to := fs.Int64("to", -1, "down: roll back to this version (0 removes everything, including the schema if it is empty); up: migrate up to it")
	asJSON := fs.Bool("json", false, "status: print JSON instead of a table")
	outDir := fs.String("out", "", "sql: directory to write pgcoord's goose SQL files to (created if missing)")
	if len(args) == 0 {
		fs.Usage()
		return errUsage
	}
	verb := args[0]
	if verb == "-h" || verb == "--help" {
		fs.Usage()
		return flag.ErrHelp
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if verb == "sql" {
		return writeSQL(*outDir, stdout)
	}
	db, err := flags.Open(ctx, false, stderr)
	if err != nil {
		return err
	}
	defer db.Close(ctx)
	pool := db.Pool
	logger := warnLogger(stderr)
	opts := &migrations.Options{Schema: flags.Schema, Logger: logger}

	switch verb {
	case "up":
		if *to > 0 {
			opts.TargetVersion = *to
		}
		res, err := migrations.Up(ctx, pool, opts)
		printResults(stdout, res)
		if err != nil {
			return err
		}
		if len(res) == 0 {
			fmt.Fprintln(stdout, "nothing to apply: the schema is up to date")
		}
		return nil
	case "down":
		if *to < 0 {
			return fmt.Errorf("migrate down needs --to N (use --to 0 to remove everything pgcoord created in schema %q)", flags.Schema)
		}
		opts.TargetVersion = *to
		res, err := migrations.Down(ctx, pool, opts)
		printResults(stdout, res)
		return err
	case "status":
		return migrateStatus(ctx, pool, opts, *asJSON, stdout)
	default:
		fs.Usage()
		return fmt.Errorf("unknown migrate command %q: want up, down, status or sql", verb)
	}
}

func printResults(w io.Writer, res []migrations.Result) {
	for _, r := range res {
		switch {
		case r.RecordedOnly:
			fmt.Fprintf(w, "%-6s %5d  %-32s already applied by River's migrator\n", "record", r.Version, r.Name)
		case r.Up:
			fmt.Fprintf(w, "%-6s %5d  %-32s %s\n", "up", r.Version, r.Name, r.Duration.Round(1e5))
		default:
			fmt.Fprintf(w, "%-6s %5d  %-32s %s\n", "down", r.Version, r.Name, r.Duration.Round(1e5))
		}
	}
}

// errNotCurrent makes `pgcoord migrate status` exit 3: migrations are
// pending, or a newer pgcoord migrated the database.
var errNotCurrent = errors.New("schema not current")

// statusJSON is the output of `pgcoord migrate status --json`.
type statusJSON struct {
	Schema          string          `json:"schema"`
	DatabaseVersion int64           `json:"database_version"`
	ExpectedVersion int64           `json:"expected_version"`
	State           string          `json:"state"` // "current", "pending" or "too_new"
	Pending         []int64         `json:"pending"`
	Problem         string          `json:"problem,omitempty"`
	Migrations      []migrationJSON `json:"migrations"`
}

type migrationJSON struct {
	Version   int64      `json:"version"`
	Name      string     `json:"name"`
	Applied   bool       `json:"applied"`
	AppliedAt *time.Time `json:"applied_at,omitempty"`
}

func migrateStatus(ctx context.Context, pool *pgxpool.Pool, opts *migrations.Options, asJSON bool, stdout io.Writer) error {
	st, err := migrations.Status(ctx, pool, opts)
	if err != nil {
		return err
	}
	out := statusJSON{Schema: opts.Schema, ExpectedVersion: migrations.LatestVersion(), State: "current", Pending: []int64{}, Migrations: []migrationJSON{}}
	for _, s := range st {
		m := migrationJSON{Version: s.Version, Name: s.Name, Applied: s.Applied}
		if s.Applied {
			at := s.AppliedAt
			m.AppliedAt = &at
			out.DatabaseVersion = max(out.DatabaseVersion, s.Version)
		} else {
			out.Pending = append(out.Pending, s.Version)
		}
		out.Migrations = append(out.Migrations, m)
	}
	// The check every Start runs also sees versions this build does not
	// know (a newer pgcoord) and River's own record.
	var ve *migrations.SchemaVersionError
	switch err := migrations.CheckSchema(ctx, pool, opts.Schema); {
	case err == nil:
	case errors.As(err, &ve):
		out.DatabaseVersion = ve.Database
		out.Problem = strings.TrimPrefix(err.Error(), "pgcoord: ")
		out.State = "pending"
		if errors.Is(err, migrations.ErrSchemaTooNew) {
			out.State = "too_new"
		}
	default:
		return err
	}
	if len(out.Pending) > 0 && out.State == "current" {
		out.State = "pending"
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tNAME\tAPPLIED")
		for _, s := range st {
			applied := "pending"
			if s.Applied {
				applied = s.AppliedAt.Format("2006-01-02 15:04:05")
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\n", s.Version, s.Name, applied)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if out.State != "current" {
		if out.Problem != "" {
			return fmt.Errorf("%w: %s", errNotCurrent, out.Problem)
		}
		return fmt.Errorf("%w: %d migration(s) pending: run \"pgcoord migrate up\"", errNotCurrent, len(out.Pending))
	}
	return nil
}

// writeSQL copies the embedded SQL migrations to dir, so a goose CLI user who
// got pgcoord with `go get` does not have to find them in the module cache.
func writeSQL(dir string, stdout io.Writer) error {
	if dir == "" {
		return errors.New("migrate sql needs --out DIR")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	entries, err := fs.ReadDir(migrations.FS, ".")
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() || filepath.Ext(e.Name()) != ".sql" {
			continue
		}
		b, err := fs.ReadFile(migrations.FS, e.Name())
		if err != nil {
			return err
		}
		path := filepath.Join(dir, e.Name())
		if err := os.WriteFile(path, b, 0o644); err != nil { //nolint:gosec // migration files are not secret
			return err
		}
		fmt.Fprintln(stdout, path)
	}
	return nil
}
