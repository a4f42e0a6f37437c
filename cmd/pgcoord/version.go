package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"

	"github.com/pgcoord/pgcoord/internal/buildinfo"
	"github.com/pgcoord/pgcoord/migrations"
)

// versionInfo is what `pgcoord version` reports.
type versionInfo struct {
	// Module is pgcoord's module version: a tag (v0.4.1) when built with
	// `go install …@version`, a pseudo-version, or "(devel)" from a checkout.
	Module string `json:"module"`
	// Go is the Go version the binary was built with.
	Go string `json:"go"`
	// Schema is the schema version this build migrates to and expects.
	Schema int64 `json:"schema"`
	// Database is the schema version of --database-url's database, when one
	// was given; 0 when it has none of pgcoord's migrations.
	Database *int64 `json:"database,omitempty"`
}

const versionUsage = `Usage: pgcoord version [--json] [flags]

Prints pgcoord's module version and the schema version it expects; with a
database URL, also the schema version of that database.

Flags:
`

func cmdVersion(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, flags := newCommand("version", versionUsage, stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	info := versionInfo{Module: moduleVersion(), Go: runtime.Version(), Schema: migrations.LatestVersion()}
	if flags.URL != "" {
		db, err := flags.Open(ctx, false, stderr)
		if err != nil {
			return err
		}
		defer db.Close(ctx)
		v, err := migrations.Version(ctx, db.Pool, &migrations.Options{Schema: flags.Schema})
		if err != nil {
			return err
		}
		info.Database = &v
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	fmt.Fprintf(stdout, "pgcoord %s (%s)\nschema version %d\n", info.Module, info.Go, info.Schema)
	if info.Database != nil {
		fmt.Fprintf(stdout, "database schema version %d\n", *info.Database)
	}
	return nil
}

// moduleVersion returns pgcoord's module version from the build information.
func moduleVersion() string { return buildinfo.Version() }
