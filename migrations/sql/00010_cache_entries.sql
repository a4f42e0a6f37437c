-- pgcache: one UNLOGGED table holds every postgres-store cache of every app.
-- UNLOGGED: no WAL, so writes are cheap; the table is emptied after a crash
-- and is not replicated (a cache may be lost, never wrong).
-- +goose Up
-- +goose StatementBegin
-- Refuse to run unless search_path names pgcoord's schema first: without it
-- (the goose CLI with no ?search_path=...) the tables would land in public,
-- where pgcoord never looks.
DO $guard$
BEGIN
    IF current_schema() IS NULL OR current_schema() = 'public' OR current_schema() LIKE 'pg\_%' THEN
        RAISE EXCEPTION 'pgcoord migrations: search_path must start with pgcoord''s schema (it resolves to %)', coalesce(current_schema(), 'no existing schema')
            USING HINT = 'CREATE SCHEMA pgcoord, then add ?search_path=pgcoord to the database URL and pass -table pgcoord.goose_db_version to goose';
    END IF;
END
$guard$;
-- +goose StatementEnd
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
-- No index on written_at: MaxEntries eviction (oldest writes first) sorts the
-- rows of one bounded cache, found through the primary key's (app, prefix)
-- prefix, and such a cache holds about MaxEntries rows. An index leading with
-- (app, prefix) would also tempt the planner away from the primary key for
-- point reads on a table without statistics, and would make every update
-- non-HOT.

-- +goose Down
-- +goose StatementBegin
-- Refuse to run unless search_path names pgcoord's schema first: without it
-- (the goose CLI with no ?search_path=...) the tables would land in public,
-- where pgcoord never looks.
DO $guard$
BEGIN
    IF current_schema() IS NULL OR current_schema() = 'public' OR current_schema() LIKE 'pg\_%' THEN
        RAISE EXCEPTION 'pgcoord migrations: search_path must start with pgcoord''s schema (it resolves to %)', coalesce(current_schema(), 'no existing schema')
            USING HINT = 'CREATE SCHEMA pgcoord, then add ?search_path=pgcoord to the database URL and pass -table pgcoord.goose_db_version to goose';
    END IF;
END
$guard$;
-- +goose StatementEnd
DROP TABLE IF EXISTS cache_entries;
