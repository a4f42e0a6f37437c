-- listen: message headers in the log.
--
-- headers is the metadata a message carries beside its payload (the
-- publisher's W3C trace context: traceparent, tracestate), the same JSON
-- object of string values a version 2 notification carries inline. It is
-- written only when a message has headers: NULL otherwise, which costs a row
-- nothing (a bit in the null bitmap). Every read of the log (catch-up, fetch
-- by id) returns it, so a message found in the log continues its publisher's
-- trace like one delivered from its notification. jsonb, not text: it
-- rejects what is not a JSON object at the insert, and an operator can find
-- the messages of a trace with headers->>'traceparent'; exact text (why the
-- payload is json) does not matter for a map of strings, and only traced
-- messages pay the parse.

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
ALTER TABLE messages ADD COLUMN headers jsonb
    CONSTRAINT messages_headers_object CHECK (jsonb_typeof(headers) = 'object');

COMMENT ON COLUMN messages.headers IS 'message metadata (W3C trace context), a JSON object of strings; NULL when the message has none';

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
ALTER TABLE messages DROP COLUMN headers;
