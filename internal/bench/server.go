package bench

import (
	"context"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/internal/pglocal"
	"github.com/pgcoord/pgcoord/migrations"
)

// OpenPostgres is the server of the comparison modules (bench/redis,
// bench/peers): PGCOORD_DATABASE_URL, else a throwaway local server started
// with local's options. pgcoord's schema is migrated. The returned function
// closes the pool and stops the local server.
func OpenPostgres(ctx context.Context, local *pglocal.Options) (*pgxpool.Pool, func(), error) {
	url := os.Getenv("PGCOORD_DATABASE_URL")
	stopLocal := func() {}
	if url == "" {
		srv, err := pglocal.StartWith(ctx, local)
		if err != nil {
			return nil, nil, err
		}
		url = srv.URL()
		stopLocal = func() { _ = srv.Stop(context.WithoutCancel(ctx)) }
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		stopLocal()
		return nil, nil, err
	}
	if _, err := migrations.Up(ctx, pool, nil); err != nil {
		pool.Close()
		stopLocal()
		return nil, nil, err
	}
	return pool, func() { pool.Close(); stopLocal() }, nil
}

// DescribeServer names the server's version and the settings that decide
// what a commit costs, so every result says which durability it was
// measured with.
func DescribeServer(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	var version, fsync, syncCommit, fpw string
	err := pool.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('fsync'),
		current_setting('synchronous_commit'), current_setting('full_page_writes')`).Scan(&version, &fsync, &syncCommit, &fpw)
	if err != nil {
		return "", fmt.Errorf("read server settings: %w", err)
	}
	return fmt.Sprintf("PostgreSQL %s, fsync=%s synchronous_commit=%s full_page_writes=%s", version, fsync, syncCommit, fpw), nil
}
