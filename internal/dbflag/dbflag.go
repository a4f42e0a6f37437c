// Package dbflag is the database flags every pgcoord command shares
// (cmd/pgcoord's subcommands): --database-url and --schema, the schema check
// before any SQL, and a throwaway local PostgreSQL when no URL is given and
// the command allows one.
package dbflag

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/internal/pglocal"
	"github.com/pgcoord/pgcoord/internal/schema"
)

// ErrNoDatabase tells the user what to do when no database is given.
var ErrNoDatabase = errors.New("no database: set PGCOORD_DATABASE_URL (or --database-url) to a PostgreSQL connection string")

// Flags are the connection flags of one command.
type Flags struct {
	// URL is --database-url (default $PGCOORD_DATABASE_URL). Open sets it to
	// the throwaway server's URL when it starts one.
	URL string
	// Schema is --schema (default $PGCOORD_SCHEMA, else [schema.Default]).
	Schema string
	// Local configures the throwaway server Open starts when URL is empty.
	Local pglocal.Options
}

// Register adds --database-url and --schema to fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.URL, "database-url", os.Getenv("PGCOORD_DATABASE_URL"), "PostgreSQL connection string (env PGCOORD_DATABASE_URL)")
	def := os.Getenv("PGCOORD_SCHEMA")
	if def == "" {
		def = schema.Default
	}
	fs.StringVar(&f.Schema, "schema", def, "schema holding pgcoord's tables (env PGCOORD_SCHEMA)")
}

// DB is an open database of a command: the pool, and the throwaway server
// behind it if Open started one.
type DB struct {
	Pool  *pgxpool.Pool
	local *pglocal.Server
}

// Throwaway reports whether the database is a throwaway local server.
func (db *DB) Throwaway() bool { return db.local != nil }

// Close closes the pool and stops the throwaway server, if any.
func (db *DB) Close(ctx context.Context) error {
	db.Pool.Close()
	if db.local == nil {
		return nil
	}
	if err := db.local.Stop(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("stop the throwaway PostgreSQL: %w", err)
	}
	return nil
}

// Open checks Schema, then connects to URL and pings it. When URL is empty
// it returns [ErrNoDatabase], unless throwaway is true: then it starts a
// local PostgreSQL from the server binaries (saying so on stderr) and sets
// URL to it; [DB.Close] removes it.
func (f *Flags) Open(ctx context.Context, throwaway bool, stderr io.Writer) (*DB, error) {
	if err := schema.Validate(f.Schema); err != nil {
		return nil, err
	}
	db := &DB{}
	if f.URL == "" {
		if !throwaway {
			return nil, ErrNoDatabase
		}
		fmt.Fprintln(stderr, "pgcoord: PGCOORD_DATABASE_URL is not set; starting a throwaway local PostgreSQL")
		local, err := pglocal.StartWith(ctx, &f.Local)
		if err != nil {
			if errors.Is(err, pglocal.ErrNoPostgres) {
				return nil, errors.New("no PostgreSQL found: install it with apt-get install -y postgresql, or set PGCOORD_DATABASE_URL")
			}
			return nil, err
		}
		db.local = local
		f.URL = local.URL()
	}
	pool, err := pgxpool.New(ctx, f.URL)
	if err == nil {
		err = pool.Ping(ctx)
		if err != nil {
			pool.Close()
		}
	}
	if err != nil {
		if db.local != nil {
			_ = db.local.Stop(context.WithoutCancel(ctx))
		}
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	db.Pool = pool
	return db, nil
}
