-- pgcache: one UNLOGGED table holds every postgres-store cache of every app.
-- UNLOGGED: no WAL, so writes are cheap; the table is emptied after a crash
-- and is not replicated (a cache may be lost, never wrong).
-- +goose Up
CREATE UNLOGGED TABLE cache_entries (
    app        text COLLATE "C" NOT NULL,
    prefix     text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    -- kind 0: value holds JSON text; kind 1: value holds raw bytes.
    kind       smallint NOT NULL DEFAULT 0,
    value      bytea NOT NULL,
    -- NULL: no expiry. Compared with the database clock only.
    expires_at timestamptz,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (app, prefix, key)
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02);

-- The sweeper deletes expired rows of one app in bounded batches.
CREATE INDEX cache_entries_expires_at_idx ON cache_entries (app, expires_at) WHERE expires_at IS NOT NULL;
-- MaxEntries evicts the oldest writes of one cache first.
CREATE INDEX cache_entries_written_at_idx ON cache_entries (app, prefix, written_at);

-- +goose Down
DROP TABLE IF EXISTS cache_entries;
