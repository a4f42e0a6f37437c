// Command peers runs pgcoord side by side with the libraries a team would
// otherwise pick for the same job on PostgreSQL, on one server, in one run,
// and prints pgcoord's cost over each peer's:
//
//   - watermill-sql v4 (Postgres publisher and subscriber, a polled table):
//     publish → delivered latency with one message in flight, and messages
//     per second from one sequential publisher until the last is delivered;
//     once with a 1 ms poll and once with watermill's default (1 s); vs
//     pgcoord's listen (Publish → Subscribe handler on another instance);
//   - River used directly (no pgcoord), with its defaults and with
//     pgcoord's settings: the rows of `pgcoord bench queue`, whose baseline
//     is River itself.
//
// cirello.io/pglock is not measured: the Go module proxy does not serve it.
//
// Sides alternate in chunks so that load on the machine weighs on both alike.
// It is its own Go module so that pgcoord never depends on its peers.
//
//	cd bench/peers && go run . [--ops 1000] [--json] [--fast-server] [watermill|river|all]
//
// PostgreSQL comes from PGCOORD_DATABASE_URL, else a throwaway local server
// with production durability (--fast-server: fsync, synchronous_commit and
// full_page_writes off). Rows have the shape of `pgcoord bench --json`, the
// peer's figure in "baseline".
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/pgcoord/pgcoord/internal/bench"
	"github.com/pgcoord/pgcoord/internal/pglocal"
)

func main() { bench.Main("peers", run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("peers", flag.ContinueOnError)
	fs.SetOutput(stderr)
	// --ops: watermill with its default poll runs a tenth (at least 4);
	// --json rows have the shape of `pgcoord bench --json`, the peer's
	// figure in baseline.
	flags := bench.AddFlags(fs, 1000)
	ops, asJSON, fast := flags.Ops, flags.JSON, flags.Fast
	which := "all"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		which, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if which != "all" && which != "watermill" && which != "river" {
		return fmt.Errorf("unknown peer %q: want watermill, river or all", which)
	}
	pool, stopPG, err := bench.OpenPostgres(ctx, &pglocal.Options{Durable: !*fast})
	if err != nil {
		return err
	}
	defer stopPG()
	server, err := bench.DescribeServer(ctx, pool)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "peers: server %s\n", server)
	fmt.Fprintln(stderr, "peers: cirello.io/pglock not measured (the Go module proxy does not serve it)")

	var rows []bench.Row
	if which == "all" || which == "watermill" {
		fmt.Fprintln(stderr, "peers: running watermill-sql...")
		r, err := watermillRows(ctx, pool, *ops)
		if err != nil {
			return fmt.Errorf("watermill-sql: %w", err)
		}
		rows = append(rows, r...)
	}
	if which == "all" || which == "river" {
		fmt.Fprintln(stderr, "peers: running River...")
		r, err := bench.Queue(ctx, pool, bench.Options{Ops: *ops})
		if err != nil {
			return fmt.Errorf("river: %w", err)
		}
		for _, row := range r {
			if row.Name == "queue.throughput_envelope" {
				// River against River (pgcoord's row shape vs a minimal
				// one): a pgcoord bench row, not a peer comparison.
				continue
			}
			row.Name = "river." + strings.TrimPrefix(row.Name, "queue.")
			row.BaselineName = "River v0.51.2, its defaults"
			if !strings.HasSuffix(row.Name, "_defaults") {
				row.BaselineName = "River v0.51.2, pgcoord's settings"
			}
			rows = append(rows, row)
		}
	}
	if *asJSON {
		return bench.WriteJSON(stdout, rows)
	}
	fmt.Fprintf(stdout, "server: %s\n", server)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "NAME\tPGCOORD\tPEER\tUNIT\tCOST RATIO\tPEER IS\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%s\t%.2f\t%s\t\n", r.Name, r.Pgcoord, r.Baseline, r.Unit, r.CostRatio, r.BaselineName)
	}
	return tw.Flush()
}
