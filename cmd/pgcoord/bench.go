package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/pgcoord/pgcoord/internal/bench"
	"github.com/pgcoord/pgcoord/migrations"
)

// suites are the per-package benchmarks, in the order `all` runs them.
var suites = []struct {
	name string
	run  bench.Suite
}{
	{"cache", bench.Cache},
	{"listen", bench.Listen},
	{"queue", bench.Queue},
	{"lock", bench.Lock},
	{"otel", bench.Otel},
}

const benchUsage = `Usage: pgcoord bench [cache|listen|queue|lock|otel|all] [--json] [flags]

Measures each pgcoord operation side by side with the raw PostgreSQL primitive
it is built on, in the same run on the same server, and prints both figures
and their cost ratio (pgcoord's cost over the baseline's: latency / latency, or
baseline throughput / pgcoord throughput; 1.0 = as fast as the raw primitive).
Without a database URL it starts a throwaway local PostgreSQL with production
durability (fsync, synchronous_commit and full_page_writes on); --fast-server
turns all three off. The server's settings are printed with the results.

Flags:
`

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, flags := newCommand("bench", benchUsage, stderr)
	asJSON := fs.Bool("json", false, `one JSON object per line: {"name","pgcoord","baseline","baseline_name","unit","cost_ratio"}`)
	ops := fs.Int("ops", 0, "operations per measurement (default: each suite's own)")
	fast := fs.Bool("fast-server", false, "run the throwaway server with fsync, synchronous_commit and full_page_writes off (faster, not what production runs; default: production durability)")
	which := "all"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		which, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	var selected []bench.Suite
	var names []string
	for _, s := range suites {
		if which == "all" || which == s.name {
			selected = append(selected, s.run)
			names = append(names, s.name)
		}
	}
	if len(selected) == 0 {
		fs.Usage()
		return fmt.Errorf("unknown suite %q: want cache, listen, queue, lock, otel or all", which)
	}

	flags.Local.Durable = !*fast
	db, err := flags.Open(ctx, true, stderr)
	if err != nil {
		return err
	}
	defer db.Close(ctx)
	pool := db.Pool
	logger := warnLogger(stderr)
	if _, err := migrations.Up(ctx, pool, &migrations.Options{Schema: flags.Schema, Logger: logger}); err != nil {
		return err
	}
	server, err := bench.DescribeServer(ctx, pool)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "pgcoord bench: server %s\n", server)
	opts := bench.Options{Ops: *ops, Schema: flags.Schema, Prefix: fmt.Sprintf("bench%d", time.Now().UnixNano())}

	var all []bench.Row
	for i, run := range selected {
		fmt.Fprintf(stderr, "pgcoord bench: running %s...\n", names[i])
		rows, err := run(ctx, pool, opts)
		if err != nil {
			return fmt.Errorf("bench %s: %w", names[i], err)
		}
		if *asJSON {
			if err := bench.WriteJSON(stdout, rows); err != nil {
				return err
			}
		}
		all = append(all, rows...)
	}
	if *asJSON {
		return nil
	}
	fmt.Fprintf(stdout, "server: %s\n", server)
	return printRows(stdout, all)
}

func printRows(w io.Writer, rows []bench.Row) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "NAME\tPGCOORD\tBASELINE\tUNIT\tCOST RATIO\tBASELINE IS\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%s\t%.2f\t%s\t\n", r.Name, r.Pgcoord, r.Baseline, r.Unit, r.CostRatio, r.BaselineName)
	}
	return tw.Flush()
}
