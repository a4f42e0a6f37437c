package advisorylock_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

func TestAcquireReleaseSmoke(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := testCtx(t)
	m := newManager(t, db.Pool, nil)

	l1, err := m.Acquire(ctx, "k", time.Minute)
	require.NoError(t, err)
	require.Equal(t, "k", l1.Key())
	require.Positive(t, l1.Token())

	_, err = m.TryAcquire(ctx, "k", 0)
	var lae *advisorylock.LockAcquireError
	require.True(t, errors.As(err, &lae), "%v", err)
	require.Equal(t, advisorylock.ReasonLocked, lae.Reason)

	require.NoError(t, l1.Release(ctx))
	require.True(t, isClosed(l1.Done()))
	require.NoError(t, l1.Release(ctx))

	l2, err := m.TryAcquire(ctx, "k", 0)
	require.NoError(t, err)
	require.Greater(t, l2.Token(), l1.Token())
	require.NoError(t, l2.Release(ctx))
}
