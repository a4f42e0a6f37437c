-- advisorylock: fencing tokens in blocks, so that a grant writes no WAL.
--
-- A grant used to draw nextval(lock_tokens) each time; every 32nd nextval of
-- the logged sequence writes WAL, so that grant's commit waited for a WAL
-- flush while it held the lease row. Now the sequence hands out blocks of
-- 1024 tokens (INCREMENT BY 1024): a row draws a block when it is created and
-- when its block is used up, and every other grant takes token + 1 under the
-- row lock. token_end is the last token of the row's block (0: none, a row
-- written before this migration, which draws a block at its next grant). A
-- token is still strictly larger than every earlier token of its key, also
-- after a crash empties the UNLOGGED table (a new row draws a block above
-- every block drawn before), and unique across keys (blocks are disjoint).
-- Rows written before: their tokens are at most the sequence's value, below
-- the first block. Instances of the previous release draw nextval for every
-- grant: the value is above every block handed out, and their grant leaves
-- token_end below it, so the next grant draws a block.

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
ALTER TABLE locks ADD COLUMN token_end bigint NOT NULL DEFAULT 0;
ALTER SEQUENCE lock_tokens INCREMENT BY 1024;
-- Log the sequence's state again (log_cnt 0), so that no value pre-logged
-- with the old increment can come back after a crash.
SELECT setval('lock_tokens', last_value, is_called) FROM lock_tokens;

COMMENT ON COLUMN locks.token_end IS 'last fencing token of the row''s block (advisorylock draws a block of lock_tokens when token reaches it)';

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
-- Every token of a block is below the next block: after this, nextval is
-- above every token handed out, as the previous release needs.
ALTER TABLE locks DROP COLUMN token_end;
ALTER SEQUENCE lock_tokens INCREMENT BY 1;
SELECT setval('lock_tokens', last_value + 1024) FROM lock_tokens;
