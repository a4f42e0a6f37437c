// Command pgcoord runs pgcoord's migrations, a three-instance demo of the
// NocoBase cluster guide's scenarios, an inspector of live coordination state,
// and the side-by-side benchmark.
//
//	pgcoord migrate up|down|status|sql  apply, roll back, list or write out migrations
//	pgcoord demo                     three instances act out the four scenarios
//	pgcoord inspect [--json]         locks, queues, caches and messages of a live database
//	pgcoord dashboard [--addr A]     the cluster dashboard (River UI + pgcoord pages), read-only
//	pgcoord bench [suite] [--json]   pgcoord vs the raw PostgreSQL primitive
//	pgcoord version [--json]         module and schema versions
//
// The database comes from --database-url or PGCOORD_DATABASE_URL. demo and
// bench start a throwaway local PostgreSQL when neither is set.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/pgcoord/pgcoord/internal/dbflag"
)

const usage = `pgcoord: cluster coordination on the PostgreSQL you already run.

Usage:
  pgcoord migrate up|down|status|sql [flags]
                                           apply, roll back, list or write out migrations
  pgcoord demo [flags]                     three instances act out the cluster guide's four scenarios
  pgcoord inspect [--json] [flags]         show locks, queues, caches and messages of a live database
  pgcoord dashboard [--addr 127.0.0.1:8080] [flags]
                                           serve the cluster dashboard (read-only; loopback by default)
  pgcoord bench [cache|listen|queue|lock|otel|all] [--json]
                                           pgcoord vs the raw PostgreSQL primitive, side by side
  pgcoord version [--json] [flags]         module version and schema version (and the database's)

Every command takes --database-url (default: $PGCOORD_DATABASE_URL) and
--schema (default: $PGCOORD_SCHEMA, else "pgcoord"). demo and bench start a
throwaway local PostgreSQL when no database URL is given.

Run "pgcoord <command> --help" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "pgcoord: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	err := cmd(ctx, args[1:], stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.Is(err, errNotCurrent):
		fmt.Fprintln(stderr, "pgcoord:", err)
		return 3
	default:
		fmt.Fprintln(stderr, "pgcoord:", err)
		return 1
	}
}

// commands are what run dispatches to, by the first argument (node is the
// demo's child process).
var commands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) error{
	"migrate": cmdMigrate, "demo": cmdDemo, "node": cmdNode, "inspect": cmdInspect,
	"dashboard": cmdDashboard, "bench": cmdBench, "version": cmdVersion, "--version": cmdVersion,
}

var errUsage = errors.New("usage")

// warnLogger is the commands' logger: text on w, warnings and errors only.
func warnLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// newCommand returns the flag set of `pgcoord name`, printing to stderr,
// with the database flags registered; its Usage prints usage (which ends
// with "Flags:\n") and then the flags' defaults.
func newCommand(name, usage string, stderr io.Writer) (*flag.FlagSet, *dbflag.Flags) {
	fs := flag.NewFlagSet("pgcoord "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var flags dbflag.Flags
	flags.Register(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	return fs, &flags
}

// parseNoArgs parses args into fs; a positional argument is a usage error.
func parseNoArgs(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	return nil
}
