package inspectq_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/inspectq"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/internal/schema"
)

type cache struct {
	App, Prefix             string
	Entries, Bytes, Expired int64
}

// Caches counts the entries, value bytes and expired rows of each (app,
// prefix), in order, and nothing of an empty table.
func TestCaches(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	got, err := inspectq.Caches[cache](ctx, db.Pool, schema.Default)
	require.NoError(t, err)
	require.Empty(t, got)
	_, err = db.Pool.Exec(ctx, `INSERT INTO `+inspectq.Table(schema.Default, "cache_entries")+` (app, prefix, key, value, expires_at) VALUES
		('b', 'p', 'k1', '\x0102', NULL),
		('a', 'q', 'k1', '\x01', now() - interval '1 minute'),
		('a', 'q', 'k2', '\x010203', now() + interval '1 hour'),
		('a', 'p', 'k1', '\x', now() - interval '1 minute')`)
	require.NoError(t, err)
	got, err = inspectq.Caches[cache](ctx, db.Pool, schema.Default)
	require.NoError(t, err)
	require.Equal(t, []cache{
		{App: "a", Prefix: "p", Entries: 1, Bytes: 0, Expired: 1},
		{App: "a", Prefix: "q", Entries: 2, Bytes: 4, Expired: 1},
		{App: "b", Prefix: "p", Entries: 1, Bytes: 2, Expired: 0},
	}, got)

	_, err = inspectq.Caches[cache](ctx, db.Pool, "no_such_schema")
	require.ErrorContains(t, err, "caches: ")
}

// OwnerLive holds exactly while a session holds the owner's identity lock
// (second key owner_id, exclusive), whatever the first key.
func TestOwnerLive(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	locks := inspectq.Table(schema.Default, "locks")
	_, err := db.Pool.Exec(ctx, `INSERT INTO `+locks+` (app, key, token, owner_id, owner) VALUES
		('a', 'held', 1, 7, 'inst-7'), ('a', 'orphan', 2, 8, 'inst-8'), ('a', 'shared', 3, 9, 'inst-9')`)
	require.NoError(t, err)
	conn, err := db.Pool.Acquire(ctx)
	require.NoError(t, err)
	t.Cleanup(conn.Release)
	_, err = conn.Exec(ctx, `SELECT pg_advisory_lock(42, 7), pg_advisory_lock_shared(42, 9), pg_advisory_lock(8, 42)`)
	require.NoError(t, err)
	live := func() []string {
		keys, err := inspectq.Collect(ctx, db.Pool, "live", `SELECT key FROM `+locks+` l WHERE `+inspectq.OwnerLive+` ORDER BY key`,
			inspectq.Fields(func(k *string) []any { return []any{k} }))
		require.NoError(t, err)
		return keys
	}
	require.Equal(t, []string{"held"}, live(), "only the exclusive lock with owner_id as its second key counts")
	_, err = conn.Exec(ctx, `SELECT pg_advisory_unlock_all()`)
	require.NoError(t, err)
	require.Empty(t, live(), "the identity lock released: the owner is gone")
}
