-- queue: River's tools read a pgcoord message naturally.
--
-- 1. river_job.args.payload holds the published JSON value itself, not a
--    JSON string holding its text, so SQL can filter on it
--    (args->'payload'->>'x'). A payload jsonb cannot hold (a \u0000 escape)
--    moves to args.payload_text, as its exact text.
-- 2. A channel that is a valid River queue name gets a readable queue name:
--    "<app>-<channel>", or the channel itself when shared (see queueName in
--    queue/names.go for the exact rule). Before, every queue name was a
--    sanitized prefix and 16 hex digits of SHA-256 over the identity; this
--    migration recognises the identity by recomputing that hash, and
--    renames the jobs. Channels that stay hashed keep their name.
--
-- Run it with every instance stopped (Start refuses an older schema).

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
-- +goose StatementBegin
DO $up$
DECLARE
    r record;
    v jsonb;
BEGIN
    -- The goose CLI may run the SQL files before River's migrator created
    -- river_job: then there is nothing to migrate.
    IF to_regclass('river_job') IS NULL THEN
        RETURN;
    END IF;
    -- Each payload string becomes the JSON value it holds; text jsonb cannot
    -- hold (a \u0000 escape) is kept as payload_text. Row by row, in this
    -- block, not through a helper function: a pg_temp function needs the
    -- TEMP privilege, which a migration role may lack.
    FOR r IN SELECT id, args->>'payload' AS t FROM river_job
        WHERE kind = 'pgcoord.queue.message' AND jsonb_typeof(args->'payload') = 'string'
        ORDER BY id FOR UPDATE
    LOOP
        BEGIN
            v := r.t::jsonb;
        EXCEPTION WHEN others THEN
            v := NULL;
        END;
        IF v IS NULL THEN
            UPDATE river_job SET args = (args - 'payload') || jsonb_build_object('payload_text', args->'payload') WHERE id = r.id;
        ELSE
            UPDATE river_job SET args = jsonb_set(args, '{payload}', v) WHERE id = r.id;
        END IF;
    END LOOP;
    WITH m AS (
        SELECT j.id, j.args->>'channel' AS ch, right(j.queue, 16) AS sum,
            CASE WHEN j.queue ~ '_[0-9a-f]{16}$' THEN left(j.queue, length(j.queue) - 17) ELSE '' END AS p
        FROM river_job j
        WHERE j.kind = 'pgcoord.queue.message' AND j.queue ~ '(^|_)[0-9a-f]{16}$'
    ), named AS (
        SELECT m.id, CASE
            WHEN m.sum = substr(encode(sha256('shared'::bytea || '\x00'::bytea || convert_to(m.ch, 'UTF8')), 'hex'), 1, 16) THEN
                CASE WHEN m.ch ~ '^[a-z0-9]+(_[a-z0-9]+)*$' AND m.ch !~ '(^|_)[0-9a-f]{16}$' AND octet_length(m.ch) <= 64 THEN m.ch END
            ELSE (
                -- The app is the legacy prefix up to one of its underscores (or
                -- all of it, when the prefix was cut right after the app).
                SELECT c.a || '-' || m.ch
                FROM (SELECT m.p AS a UNION ALL
                      SELECT left(m.p, i - 1) FROM generate_series(2, length(m.p)) AS i WHERE substr(m.p, i, 1) = '_') AS c
                WHERE c.a ~ '^[a-z0-9]+(_[a-z0-9]+)*$' AND m.ch ~ '^[a-z0-9]+([_-][a-z0-9]+)*$'
                    AND octet_length(c.a) + 1 + octet_length(m.ch) <= 64
                    AND m.sum = substr(encode(sha256('app'::bytea || '\x00'::bytea || convert_to(c.a, 'UTF8') || '\x00'::bytea || convert_to(m.ch, 'UTF8')), 'hex'), 1, 16)
                LIMIT 1)
            END AS queue
        FROM m
    )
    UPDATE river_job AS j SET queue = named.queue
    FROM named
    WHERE j.id = named.id AND named.queue IS NOT NULL;
END
$up$;
-- +goose StatementEnd

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
-- +goose StatementBegin
DO $down$
BEGIN
    IF to_regclass('river_job') IS NULL THEN
        RETURN;
    END IF;
    -- Back to hashed queue names: a readable name is the shared channel
    -- itself, or "<app>-<channel>".
    WITH m AS (
        SELECT j.id, j.args->>'channel' AS ch, j.queue = j.args->>'channel' AS shared,
            CASE WHEN j.queue = j.args->>'channel' THEN '' ELSE split_part(j.queue, '-', 1) END AS app
        FROM river_job j
        WHERE j.kind = 'pgcoord.queue.message'
            AND (j.queue = j.args->>'channel' OR j.queue = split_part(j.queue, '-', 1) || '-' || (j.args->>'channel'))
    ), hashed AS (
        SELECT m.id,
            substr(encode(sha256(CASE WHEN m.shared THEN 'shared'::bytea || '\x00'::bytea
                ELSE 'app'::bytea || '\x00'::bytea || convert_to(m.app, 'UTF8') || '\x00'::bytea END
                || convert_to(m.ch, 'UTF8')), 'hex'), 1, 16) AS sum,
            rtrim(left(btrim(regexp_replace(lower(CASE WHEN m.shared THEN m.ch ELSE m.app || '_' || m.ch END), '[^a-z0-9]+', '_', 'g'), '_'), 47), '_') AS prefix
        FROM m
    )
    UPDATE river_job AS j SET queue = CASE WHEN hashed.prefix = '' THEN hashed.sum ELSE hashed.prefix || '_' || hashed.sum END
    FROM hashed
    WHERE j.id = hashed.id;
    -- Payloads back to JSON strings holding their text (jsonb's rendering).
    UPDATE river_job SET args = jsonb_set(args, '{payload}', to_jsonb((args->'payload')::text))
    WHERE kind = 'pgcoord.queue.message' AND args ? 'payload';
    UPDATE river_job SET args = (args - 'payload_text') || jsonb_build_object('payload', args->'payload_text')
    WHERE kind = 'pgcoord.queue.message' AND args ? 'payload_text';
END
$down$;
-- +goose StatementEnd
