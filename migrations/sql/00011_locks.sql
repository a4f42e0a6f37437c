-- advisorylock: the lease table that decides who holds a lock.
--
-- One row per (app, key) ever locked (rows free for longer than the
-- configured retention are swept). A lease is held while
--   expires_at IS NULL OR expires_at > now()      -- NULL: a reservation with no expiry
-- and its owner's liveness session still holds the session advisory lock
-- (lock_owner_class, owner_id). Release sets expires_at to -infinity.
--
-- UNLOGGED: a lease never outlives the owner's Postgres session, and a crash
-- or failover ends every session, so there is nothing worth replaying. The
-- token sequence is logged: fencing tokens are never reused.
-- A grant's DO UPDATE assigns the key column (to its own value): that makes
-- it take the row lock in FOR UPDATE strength, which conflicts with the
-- FOR KEY SHARE lock taken by CheckTx, while renewals and releases (no key
-- column assigned) do not. Unchanged key values keep the updates HOT.

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
CREATE SEQUENCE lock_tokens AS bigint NO CYCLE;
CREATE SEQUENCE lock_owners AS integer NO CYCLE;

CREATE UNLOGGED TABLE locks (
    app         text        NOT NULL,
    key         text        NOT NULL,
    token       bigint      NOT NULL,
    owner_id    integer     NOT NULL,
    owner       text        NOT NULL,
    expires_at  timestamptz,
    wanted_by   integer     NOT NULL DEFAULT 0,
    last_wanted integer     NOT NULL DEFAULT 0,
    taken_from  text,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app, key)
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01);

COMMENT ON TABLE locks IS 'pgcoord advisorylock leases (see package advisorylock)';
COMMENT ON COLUMN locks.wanted_by IS 'owner_id of the one instance waiting for the key, -1 for several, 0 for none';
COMMENT ON COLUMN locks.last_wanted IS 'wanted_by as it was when the lease was last released (release returns it)';

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
DROP TABLE locks;
DROP SEQUENCE lock_owners;
DROP SEQUENCE lock_tokens;
