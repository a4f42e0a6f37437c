package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
)

// Main runs a comparison command (bench/redis, bench/peers): run gets the
// arguments and is cancelled on an interrupt; an error is printed after
// name and exits with status 1.
func Main(name string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// Flags are the flags every comparison command has.
type Flags struct {
	// Ops is --ops, JSON --json, Fast --fast-server.
	Ops        *int
	JSON, Fast *bool
}

// AddFlags registers Flags on fs, --ops defaulting to ops.
func AddFlags(fs *flag.FlagSet, ops int) Flags {
	return Flags{
		Ops:  fs.Int("ops", ops, "operations per measurement"),
		JSON: fs.Bool("json", false, `one JSON object per line`),
		Fast: fs.Bool("fast-server", false, "run the throwaway PostgreSQL with fsync, synchronous_commit and full_page_writes off (default: production durability)"),
	}
}
