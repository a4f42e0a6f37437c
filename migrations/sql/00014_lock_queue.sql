-- advisorylock: the FIFO of instances waiting for a key, on the lease row.
--
-- queue holds the owner_ids (liveness identities) of the instances waiting
-- for the key, first in line first; queue_ttl the lease each asked for (µs,
-- 0 = a reservation with no expiry) and queue_name its instance name (locks.owner
-- once granted), index for index. A release designates the first entry whose
-- liveness session is alive: the lease goes to it in the release's own
-- statement (new token), and only that instance is notified. Dead entries are
-- dropped by the next statement that walks the FIFO. The FIFO is on the lease
-- row (not in a table of its own) so that every decision sees it as of the row
-- lock it holds. wanted_by / last_wanted stay for instances running the
-- previous release during a rolling upgrade.

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
ALTER TABLE locks
    ADD COLUMN queue      integer[] NOT NULL DEFAULT '{}',
    ADD COLUMN queue_ttl  bigint[]  NOT NULL DEFAULT '{}',
    ADD COLUMN queue_name text[]    NOT NULL DEFAULT '{}';

COMMENT ON COLUMN locks.queue IS 'owner_ids of the instances waiting for the key, FIFO (advisorylock designates the first live one at release)';
COMMENT ON COLUMN locks.queue_ttl IS 'lease asked for by each queue entry, microseconds (0: no expiry)';
COMMENT ON COLUMN locks.queue_name IS 'instance name of each queue entry (locks.owner once granted)';

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
ALTER TABLE locks
    DROP COLUMN queue,
    DROP COLUMN queue_ttl,
    DROP COLUMN queue_name;
