package advisorylock_test

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// FuzzLockKey feeds arbitrary keys to TryAcquire, Acquire and RunExclusive.
// A valid key (1 to MaxKeyBytes bytes of UTF-8 without NUL) is granted,
// excludes a second instance, and is released; anything else returns
// ErrInvalidKey and writes nothing to the lease table. A lock of another app
// held meanwhile is never disturbed.
func FuzzLockKey(f *testing.F) {
	for _, k := range append(pgtest.HostileNames(),
		"k",
		"'; DROP TABLE pgcoord.locks; --",
		strings.Repeat("k", advisorylock.MaxKeyBytes),
		strings.Repeat("k", advisorylock.MaxKeyBytes+1),
		strings.Repeat("é", 600),
	) {
		f.Add(k)
	}
	ctx := context.Background()
	db := pgtest.NewDB(f)
	newManager := func(app string) *advisorylock.Manager {
		m, err := advisorylock.New(db.Pool, &advisorylock.Config{AppName: app, PollInterval: 50 * time.Millisecond})
		require.NoError(f, err)
		require.NoError(f, m.Start(ctx))
		f.Cleanup(func() { _ = m.Close(context.Background()) })
		return m
	}
	a, b, bystander := newManager("fuzz"), newManager("fuzz"), newManager("bystander")
	held, err := bystander.TryAcquire(ctx, "held", 0)
	require.NoError(f, err)
	table := pgx.Identifier{db.Schema, "locks"}.Sanitize()

	f.Fuzz(func(t *testing.T, key string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var before int
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&before))
		valid := key != "" && len(key) <= advisorylock.MaxKeyBytes && utf8.ValidString(key) && !strings.ContainsRune(key, 0)

		l, err := a.TryAcquire(ctx, key, 0)
		if !valid {
			require.ErrorIs(t, err, advisorylock.ErrInvalidKey)
			_, err = a.Acquire(ctx, key, time.Second)
			require.ErrorIs(t, err, advisorylock.ErrInvalidKey)
			called := false
			err = a.RunExclusive(ctx, key, time.Second, func(context.Context, *advisorylock.Lock) error { called = true; return nil })
			require.ErrorIs(t, err, advisorylock.ErrInvalidKey)
			require.False(t, called)
			var after int
			require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&after))
			require.Equal(t, before, after, "nothing written on rejection")
		} else {
			require.NoError(t, err)
			require.Equal(t, key, l.Key())
			_, err = b.TryAcquire(ctx, key, 0)
			var lae *advisorylock.LockAcquireError
			require.ErrorAs(t, err, &lae, "another instance cannot take %q", key)
			require.Equal(t, advisorylock.ReasonLocked, lae.Reason)
			require.NoError(t, l.Release(ctx))
			l2, err := b.TryAcquire(ctx, key, 0)
			require.NoError(t, err)
			require.Greater(t, l2.Token(), l.Token())
			require.NoError(t, l2.Release(ctx))
		}
		select {
		case <-held.Done():
			t.Fatal("another app's lock was lost")
		default:
		}
		require.NoError(t, pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return held.CheckTx(ctx, tx) }))
	})
}
