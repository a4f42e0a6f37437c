package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/pgcoord/pgcoord/migrations"
)

func cmdMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("pgcoord migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var db dbFlags
	db.register(fs)
	to := fs.Int64("to", -1, "down: roll back to this version (0 removes everything, including the schema if it is empty); up: migrate up to it")
	outDir := fs.String("out", "", "sql: directory to write pgcoord's goose SQL files to (created if missing)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: pgcoord migrate up|down|status [flags]

  up       apply every pending migration (River's tables and pgcoord's)
  down     roll back: needs --to N (0 removes everything pgcoord created)
  status   list migrations and whether each is applied
  sql      write pgcoord's goose SQL files (versions 9+) to --out DIR, for the goose CLI

Flags:
`)
		fs.PrintDefaults()
	}
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
	pool, _, err := db.open(ctx, false, stderr)
	if err != nil {
		return err
	}
	defer pool.Close()
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts := &migrations.Options{Schema: db.schema, Logger: logger}

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
			return fmt.Errorf("migrate down needs --to N (use --to 0 to remove everything pgcoord created in schema %q)", db.schema)
		}
		opts.TargetVersion = *to
		res, err := migrations.Down(ctx, pool, opts)
		printResults(stdout, res)
		return err
	case "status":
		st, err := migrations.Status(ctx, pool, opts)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tNAME\tAPPLIED")
		for _, s := range st {
			applied := "pending"
			if s.Applied {
				applied = s.AppliedAt.Format("2006-01-02 15:04:05")
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\n", s.Version, s.Name, applied)
		}
		return tw.Flush()
	default:
		fs.Usage()
		return fmt.Errorf("unknown migrate command %q: want up, down, status or sql", verb)
	}
}

func printResults(w io.Writer, res []migrations.Result) {
	for _, r := range res {
		dir := "down"
		if r.Up {
			dir = "up"
		}
		fmt.Fprintf(w, "%-4s %5d  %-32s %s\n", dir, r.Version, r.Name, r.Duration.Round(1e5))
	}
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
