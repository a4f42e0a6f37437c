-- app: the instance registry. One row per running instance of every app
-- (app.App registers at Start, heartbeats, and deletes its row at Stop).
-- An instance is alive while the backend liveness_pid (its liveness
-- session) still exists and holds its session advisory lock; a row whose
-- instance is dead is shown as dead and swept by any live instance.
--
-- UNLOGGED: every row describes live sessions, which a crash or failover
-- ends anyway.

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
CREATE UNLOGGED TABLE instances (
    app          text        NOT NULL,
    instance_id  text        NOT NULL,
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    version      text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    liveness_pid integer     NOT NULL,
    stats        jsonb       NOT NULL DEFAULT '{}',
    PRIMARY KEY (app, instance_id)
);

COMMENT ON TABLE instances IS 'pgcoord instance registry (see package app, App.Instances)';
COMMENT ON COLUMN instances.liveness_pid IS 'backend pid of the instance''s liveness session: the instance is alive while that backend holds an advisory lock';

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
DROP TABLE instances;
