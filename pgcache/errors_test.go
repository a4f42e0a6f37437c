package pgcache_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/pgcache"
)

// An error never carries the user's whole value, nor names the key or the
// package twice.
func TestErrorsDoNotEmbedValuesOrStutter(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	m := newManager(t, db.Pool, nil)
	ctx := context.Background()
	for _, store := range []string{pgcache.StorePostgres, pgcache.StoreMemory} {
		t.Run(store, func(t *testing.T) {
			c := newCache(t, m, pgcache.CacheConfig{Name: "errs-" + store, Store: store})
			big := strings.Repeat("x", 10<<20)
			require.NoError(t, c.Set(ctx, "k", big, 0))
			_, err := c.Counter().Incr(ctx, "k")
			require.ErrorIs(t, err, pgcache.ErrNotInteger)
			require.Less(t, len(err.Error()), 300, "the error must not embed the 10 MB value")
			require.Equal(t, 1, strings.Count(err.Error(), `"k"`), "no stutter: %s", err)
			require.Equal(t, 1, strings.Count(err.Error(), "pgcache:"), "no stutter: %s", err)

			err = c.Set(ctx, "k2", make(chan int), 0)
			require.Error(t, err)
			require.Equal(t, 1, strings.Count(err.Error(), "pgcache:"), "no stutter: %s", err)
		})
	}
}
