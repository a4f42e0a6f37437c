package listen

import (
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/otelxtest"
)

// An autocommit Publish commits without waiting for its WAL flush
// (synchronous_commit off, in its own transaction only: the single-message
// statement and the batch statement), while PublishTx leaves the caller's
// transaction as it is. A deferred trigger records the setting each
// message's transaction commits with, read at commit as the server reads it.
func TestPublishCommitsAsynchronously(t *testing.T) {
	ctx, db := setup(t)
	_, err := db.Pool.Exec(ctx, `ALTER DATABASE `+pgx.Identifier{db.Name}.Sanitize()+` SET synchronous_commit = on;
		CREATE TABLE public.commit_modes (id bigint, mode text);
		CREATE FUNCTION public.record_commit_mode() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO public.commit_modes VALUES (NEW.id, current_setting('synchronous_commit'));
			RETURN NULL;
		END $$;
		CREATE CONSTRAINT TRIGGER record_commit_mode AFTER INSERT ON pgcoord.messages
			DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.record_commit_mode()`)
	require.NoError(t, err)
	traces := otelxtest.NewTraces(t)
	a := started(t, db, "inst-a", &Config{TracerProvider: traces.Provider}) // its pool's sessions start with synchronous_commit on
	modeOf := func(payload string) (mode string) {
		t.Helper()
		require.NoError(t, a.pool.QueryRow(ctx, `SELECT c.mode FROM public.commit_modes c JOIN pgcoord.messages m USING (id)
			WHERE m.payload::text = $1`, payload).Scan(&mode))
		return mode
	}

	require.NoError(t, a.Publish(ctx, "ch", "single", nil))
	traced, span := traces.Provider.Tracer("test").Start(ctx, "request")
	require.NoError(t, a.Publish(traced, "ch", "batch", nil)) // with headers: the batch statement
	span.End()
	var inTx, afterTx string
	require.NoError(t, pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		if err := a.PublishTx(ctx, tx, "ch", "tx", nil); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&inTx)
	}))
	require.NoError(t, a.pool.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&afterTx))

	require.Equal(t, "off", modeOf(`"single"`))
	require.Equal(t, "off", modeOf(`"batch"`))
	require.Equal(t, "on", modeOf(`"tx"`), "PublishTx commits with the caller's setting")
	require.Equal(t, "on", inTx)
	require.Equal(t, "on", afterTx, "the session's setting is unchanged")
}
