-- listen: the messages log behind pub/sub and sync messages.
--
-- Every published message is one row. NOTIFY only wakes listeners; a listener
-- that missed notifications (reconnect, full buffer) reads the rows it missed.
-- xid is the publishing transaction's full id: readers bound their catch-up by
-- pg_snapshot_xmin(pg_current_snapshot()) so rows whose ids commit out of order
-- are never skipped. payload is json, not jsonb: json keeps the exact text
-- (key order, whitespace, duplicate keys) and accepts the \u0000 escape.

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
CREATE TABLE messages (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid          xid8        NOT NULL DEFAULT pg_current_xact_id(),
    app          text        NOT NULL,
    channel      text        NOT NULL,
    sender       text        NOT NULL,
    skip_self    boolean     NOT NULL DEFAULT false,
    only_self    boolean     NOT NULL DEFAULT false,
    payload      json        NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02);

-- Catch-up: rows of one app at or after a transaction-id watermark.
CREATE INDEX messages_app_xid_idx ON messages (app, xid, id);
-- Retention: rows are appended in time order, so a BRIN index finds the old
-- ones at almost no cost per insert.
CREATE INDEX messages_published_at_brin ON messages USING brin (published_at);

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
DROP TABLE messages;
