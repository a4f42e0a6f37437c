package lockkey_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/lockkey"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// keyCase is one key of the tests below.
type keyCase struct {
	schema string
	p      lockkey.Purpose
	parts  []string
}

func (c keyCase) String() string { return fmt.Sprintf("%s/%s/%q", c.schema, c.p, c.parts) }

// cases has every purpose in two schemas, and names that differ only in
// where a part ends.
var cases = func() []keyCase {
	var cs []keyCase
	for _, s := range []string{"pgcoord", "other"} {
		cs = append(cs,
			keyCase{s, lockkey.Migrations, nil},
			keyCase{s, lockkey.ListenPrune, []string{"main"}},
			keyCase{s, lockkey.CacheSweep, []string{"main"}},
			keyCase{s, lockkey.CacheEvict, []string{"main", "users"}},
			keyCase{s, lockkey.CacheWrap, []string{"main", "users", "42"}},
			keyCase{s, lockkey.CacheWrap, []string{"main", "users4", "2"}},
			keyCase{s, lockkey.CacheWrap, []string{"main:users", "42"}},
			keyCase{s, lockkey.CacheNear, []string{"main", "users"}},
			keyCase{s, lockkey.Liveness, []string{"host-1-abc"}},
			keyCase{s, lockkey.LivenessLock, []string{"rescuer"}},
			keyCase{s, lockkey.Demo, []string{"authcache"}},
		)
	}
	return cs
}()

// Distinct (schema, purpose, parts) have distinct keys, all in pgcoord's
// range; a purpose's keys never equal another purpose's.
func TestDistinctAndInRange(t *testing.T) {
	t.Parallel()
	seen := map[int64]keyCase{}
	for _, c := range cases {
		k := lockkey.Key(c.schema, c.p, c.parts...)
		require.GreaterOrEqual(t, k, lockkey.MinKey, c.String())
		require.LessOrEqual(t, k, lockkey.MaxKey, c.String())
		prev, dup := seen[k]
		require.False(t, dup, "%s and %s share key %d", prev, c, k)
		seen[k] = c
		require.Equal(t, k, lockkey.Key(c.schema, c.p, c.parts...), "stable within a run")
	}
	require.NotEqual(t, lockkey.IdentityClass("pgcoord"), lockkey.IdentityClass("other"))
	// Parts are separated, not concatenated: ("ab", "c") is not ("a", "bc").
	require.NotEqual(t, lockkey.Key("s", lockkey.CacheEvict, "ab", "c"), lockkey.Key("s", lockkey.CacheEvict, "a", "bc"))
	require.NotEqual(t, lockkey.Key("s", lockkey.CacheSweep, "a"), lockkey.Key("s", lockkey.CacheSweep, "a", ""))
}

// The derivation is part of the mutual exclusion between instances of
// different versions: these values change only with an upgrade rule in the
// CHANGELOG (docs/advisory-locks.md).
func TestGolden(t *testing.T) {
	t.Parallel()
	for _, g := range []struct {
		c    keyCase
		want int64
	}{
		{keyCase{"pgcoord", lockkey.Migrations, nil}, 8098489798138123436},
		{keyCase{"pgcoord", lockkey.ListenPrune, []string{"main"}}, 8098320282202591716},
		{keyCase{"pgcoord", lockkey.CacheWrap, []string{"main", "users", "42"}}, 8098489928218142103},
		{keyCase{"pgcoord", lockkey.Liveness, []string{"host-1-abc"}}, 8098474187167679357},
	} {
		require.Equal(t, g.want, lockkey.Key(g.c.schema, g.c.p, g.c.parts...), g.c.String())
	}
	require.Equal(t, int32(-520947417), lockkey.IdentityClass("pgcoord"))
}

// SQL computes in the database the key Key computes in Go.
func TestSQLMatchesKey(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	for _, c := range append(cases, keyCase{"pgcoord", lockkey.CacheWrap, []string{"main", "ünïcode ✓", "it's"}}) {
		args := []any{c.schema}
		var exprs []string
		for i, p := range c.parts {
			args = append(args, p)
			exprs = append(exprs, fmt.Sprintf("$%d::text", i+2))
		}
		var got int64
		require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT `+lockkey.SQL(`$1::text`, c.p, exprs...), args...).Scan(&got))
		require.Equal(t, lockkey.Key(c.schema, c.p, c.parts...), got, c.String())
	}
}

// Every advisory-lock key pgcoord takes comes from this package: no other
// library source derives one (hashtext, hashtextextended, its own hash).
func TestOnlyDerivation(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	bad := regexp.MustCompile(`hashtext|advisory_(xact_)?(un)?lock(_shared)?\([0-9]`)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			switch rel {
			case "bench", "internal/bench", "internal/lockkey", ".git":
				return filepath.SkipDir // benchmarks lock raw keys as the baseline
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(src), "\n") {
			require.False(t, bad.MatchString(line), "%s:%d derives an advisory-lock key outside internal/lockkey: %s", rel, i+1, strings.TrimSpace(line))
		}
		return nil
	})
	require.NoError(t, err)
}
