package advisorylock

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// The sweeper deletes rows free for longer than Retention (released,
// expired, reservations of dead owners) and keeps held or recent ones.
func TestSweepDeletesOnlyLongFreeRows(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := New(db.Pool, &Config{Retention: time.Minute})
	require.NoError(t, err)
	require.NoError(t, m.Start(ctx))
	defer func() { require.NoError(t, m.Close(ctx)) }()

	take := func(key string, ttl time.Duration) *Lock {
		var l *Lock
		if ttl == 0 {
			l, err = m.TryAcquire(ctx, key, 0)
		} else {
			l, err = m.Acquire(ctx, key, ttl)
		}
		require.NoError(t, err)
		return l
	}
	released := take("released-old", time.Minute)
	require.NoError(t, released.Release(ctx))
	recent := take("released-recent", time.Minute)
	require.NoError(t, recent.Release(ctx))
	held := take("held-old", 0)
	expired := take("expired-old", time.Millisecond)
	<-expired.Done()
	_, err = db.Pool.Exec(ctx, `INSERT INTO pgcoord.locks (app, key, token, owner_id, owner, expires_at)
		VALUES ('main', 'dead-reservation', nextval('pgcoord.lock_tokens'), 2000000000, 'gone', NULL)`)
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `UPDATE pgcoord.locks SET updated_at = now() - interval '2 minutes' WHERE key <> 'released-recent'`)
	require.NoError(t, err)

	n, err := m.sweep(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 3, n)
	rows, err := db.Pool.Query(ctx, `SELECT key FROM pgcoord.locks ORDER BY key`)
	require.NoError(t, err)
	var keys []string
	for rows.Next() {
		var k string
		require.NoError(t, rows.Scan(&k))
		keys = append(keys, k)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"held-old", "released-recent"}, keys)
	require.NoError(t, held.Extend(ctx, time.Second), "a held row survives the sweep")
	require.NoError(t, held.Release(ctx))

	// A swept key starts again with a larger token: tokens come from the
	// sequence, not from the deleted row.
	again := take("released-old", time.Minute)
	require.Greater(t, again.Token(), released.Token())
	require.NoError(t, again.Release(ctx))
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c := (*Config)(nil).withDefaults()
	require.Equal(t, DefaultAppName, c.AppName)
	require.NotEmpty(t, c.InstanceID)
	require.Equal(t, "pgcoord", c.Schema)
	require.NotNil(t, c.Logger)
	require.Equal(t, DefaultTTL, c.DefaultTTL)
	require.Equal(t, DefaultPollInterval, c.PollInterval)
	require.Equal(t, DefaultHealthCheckInterval, c.HealthCheckInterval)
	require.Equal(t, DefaultRetention, c.Retention)
	require.NoError(t, c.validate())
	orig := &Config{AppName: "x"}
	_ = orig.withDefaults()
	require.Equal(t, &Config{AppName: "x"}, orig, "the caller's Config is not modified")
}

func TestKeyHashAndChannel(t *testing.T) {
	t.Parallel()
	require.NotEqual(t, keyHash("a", "bc"), keyHash("ab", "c"))
	require.Len(t, channelName("pgcoord"), len("pgcoord_locks_")+8)
	require.Less(t, len(channelName("a_very_long_schema_name_that_goes_on_and_on_for_sixty_three_ch")), 64)
}
