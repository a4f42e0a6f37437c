package pgcache_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/pgcache"
)

// fuzzKeys are stored before each Keys call: LIKE and glob metacharacters,
// quotes and SQL, so a pattern has something to match or wrongly match.
var fuzzKeys = []string{"a", "ab", "abc", "a*b", "a?b", "a%b", "a_b", `a\b`, "[x]", "'; DROP TABLE pgcoord.cache_entries; --", "é", "x.y"}

// FuzzKeyAndPattern feeds arbitrary keys to Set/Get/Del and arbitrary glob
// patterns to Keys, on the postgres store, and compares Keys with the memory
// store's Go matcher (a differential check of the glob-to-LIKE translation).
// Valid keys round-trip; invalid ones return ErrEmptyKey or ErrInvalidKey and
// write nothing. A sentinel entry of another app is never touched.
func FuzzKeyAndPattern(f *testing.F) {
	seeds := []struct{ key, pattern string }{
		{"k", "*"},
		{"", ""},
		{"'; DROP TABLE pgcoord.cache_entries; --", "'; DROP*"},
		{"a%b", "a%*"},
		{"a_b", "a_?"},
		{`a\b`, `a\\b`},
		{"trailing", `a\`},
		{"nul\x00key", "nul\x00*"},
		{"bad\xffutf8", "\xff*"},
		{"日本語", "日?語"},
		{strings.Repeat("k", pgcache.MaxKeyBytes), strings.Repeat("*", 200)},
		{strings.Repeat("k", pgcache.MaxKeyBytes+1), "k*k*k*k*k*k*k*k*k*k*k*k*k*k*k*k*x"},
		{`"quoted"`, `\*`},
		{"[x]", "[x]"},
	}
	for _, s := range seeds {
		f.Add(s.key, s.pattern)
	}
	ctx := context.Background()
	db := pgtest.NewDB(f)
	mgr, err := pgcache.NewManager(db.Pool, &pgcache.ManagerConfig{AppName: "fuzz"})
	require.NoError(f, err)
	f.Cleanup(func() { _ = mgr.Close(context.Background()) })
	pg, err := mgr.CreateCache(ctx, pgcache.CacheConfig{Name: "pg"})
	require.NoError(f, err)
	mem, err := mgr.CreateCache(ctx, pgcache.CacheConfig{Name: "mem", Store: pgcache.StoreMemory, MaxEntries: 100})
	require.NoError(f, err)
	other, err := pgcache.NewManager(db.Pool, &pgcache.ManagerConfig{AppName: "bystander"})
	require.NoError(f, err)
	f.Cleanup(func() { _ = other.Close(context.Background()) })
	sentinel, err := other.CreateCache(ctx, pgcache.CacheConfig{Name: "pg"})
	require.NoError(f, err)
	require.NoError(f, sentinel.Set(ctx, "sentinel", "still here", 0))
	table := pgx.Identifier{db.Schema, "cache_entries"}.Sanitize()

	f.Fuzz(func(t *testing.T, key, pattern string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, pg.Reset(ctx))
		require.NoError(t, mem.Reset(ctx))
		var before int
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&before))

		err := pg.Set(ctx, key, "v", 0)
		merr := mem.Set(ctx, key, "v", 0)
		valid := key != "" && len(key) <= pgcache.MaxKeyBytes && utf8.ValidString(key) && !strings.ContainsRune(key, 0)
		var after int
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&after))
		if valid {
			require.NoError(t, err)
			require.NoError(t, merr)
			require.Equal(t, before+1, after)
			v, ok, err := pg.Get(ctx, key)
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, "v", v)
			if !strings.ContainsAny(key, `*?\`) {
				keys, err := pg.Keys(ctx, key)
				require.NoError(t, err)
				require.Contains(t, keys, key, "a key without glob metacharacters matches itself")
			}
		} else {
			require.True(t, isKeyError(err), "typed error, got %v", err)
			require.True(t, isKeyError(merr), "memory store rejects it too, got %v", merr)
			// Every other call taking a key refuses it the same way.
			_, _, err = pg.Get(ctx, key)
			require.True(t, isKeyError(err), "Get: %v", err)
			_, err = pg.MGet(ctx, "fine", key)
			require.True(t, isKeyError(err), "MGet: %v", err)
			require.True(t, isKeyError(pg.Del(ctx, key)), "Del")
			require.True(t, isKeyError(pg.MDel(ctx, "fine", key)), "MDel")
			require.True(t, isKeyError(pg.MSet(ctx, []pgcache.Item{{Key: "fine", Value: 1}, {Key: key, Value: 2}}, 0)), "MSet")
			_, _, err = pg.TTL(ctx, key)
			require.True(t, isKeyError(err), "TTL: %v", err)
			_, err = pg.Counter().Incr(ctx, key)
			require.True(t, isKeyError(err), "Counter.Incr: %v", err)
			require.True(t, isKeyError(pg.SetValueInObject(ctx, key, "f", 1)), "SetValueInObject")
			_, err = pg.Wrap(ctx, key, func(context.Context) (any, error) { return 1, nil }, 0)
			require.True(t, isKeyError(err), "Wrap: %v", err)
			require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&after))
			require.Equal(t, before, after, "nothing written on rejection")
		}

		items := make([]pgcache.Item, len(fuzzKeys))
		for i, k := range fuzzKeys {
			items[i] = pgcache.Item{Key: k, Value: i + 1}
		}
		require.NoError(t, pg.MSet(ctx, items, 0))
		require.NoError(t, mem.MSet(ctx, items, 0))
		got, err := pg.Keys(ctx, pattern)
		want, merr2 := mem.Keys(ctx, pattern)
		if err != nil {
			// A pattern PostgreSQL text cannot hold (a NUL byte, invalid
			// UTF-8) is refused with the package's error by both stores,
			// never with a raw SQL one.
			require.ErrorIs(t, err, pgcache.ErrInvalidKey, "pattern %q", pattern)
			require.ErrorIs(t, merr2, pgcache.ErrInvalidKey, "memory store, pattern %q", pattern)
		} else {
			require.NoError(t, merr2)
			slices.Sort(want)
			require.Equal(t, want, got, "postgres and memory stores agree on pattern %q", pattern)
		}

		v, ok, err := sentinel.Get(ctx, "sentinel")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, "still here", v)
	})
}

func isKeyError(err error) bool {
	return errors.Is(err, pgcache.ErrEmptyKey) || errors.Is(err, pgcache.ErrInvalidKey)
}
