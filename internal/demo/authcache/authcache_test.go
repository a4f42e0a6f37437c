package authcache_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/demo/authcache"
	"github.com/pgcoord/pgcoord/internal/demo/demotest"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// startInstances starts n instances of one app, each with its own pool
// (application_name inst-i) and its own authcache plugin, all at once.
func startInstances(t *testing.T, db *pgtest.DB, n int) ([]*app.App, []*authcache.Plugin) {
	return demotest.Start(t, db, "authdemo", n, func(string) (*authcache.Plugin, error) { return authcache.New("") })
}

func totalLoads(plugins []*authcache.Plugin) int64 {
	var n int64
	for _, p := range plugins {
		n += p.Loads()
	}
	return n
}

func TestPolicySharedThroughPostgres(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	_, plugins := startInstances(t, db, 3)

	want := authcache.TokenPolicy{ID: authcache.DefaultPolicyID, TokenExpiry: 24 * time.Hour, RenewWindow: time.Hour}
	require.NoError(t, plugins[0].UpdatePolicy(ctx, want))

	// Three instances read at once: the loader runs once in the whole cluster.
	readAll := func() []authcache.TokenPolicy {
		got := make([]authcache.TokenPolicy, len(plugins))
		var g errgroup.Group
		for i, p := range plugins {
			g.Go(func() (err error) {
				got[i], _, err = p.Policy(ctx)
				return err
			})
		}
		require.NoError(t, g.Wait())
		return got
	}
	for _, got := range readAll() {
		require.Equal(t, want, got)
	}
	require.EqualValues(t, 1, totalLoads(plugins), "the policy was loaded once for all instances")
	// Reading again is served from the cache everywhere.
	readAll()
	require.EqualValues(t, 1, totalLoads(plugins))
	var hits uint64
	for _, p := range plugins {
		hits += p.Cache().Stats().Hits
	}
	require.GreaterOrEqual(t, hits, uint64(3), "the second round hit the shared cache on every instance")

	// An update on instance 1 (row + Del in one transaction) is seen by all.
	want.TokenExpiry = 2 * time.Hour
	require.NoError(t, plugins[1].UpdatePolicy(ctx, want))
	for _, got := range readAll() {
		require.Equal(t, want, got)
	}
	require.EqualValues(t, 2, totalLoads(plugins), "the new row was loaded once after the update")
}

func TestPolicyErrors(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	_, plugins := startInstances(t, db, 1)
	_, _, err := plugins[0].Policy(ctx)
	require.ErrorIs(t, err, authcache.ErrNoPolicy, "no row: the loader's error is returned, nothing cached")
	_, ok, err := plugins[0].Cache().Get(ctx, authcache.PolicyKey)
	require.NoError(t, err)
	require.False(t, ok)
	require.Error(t, plugins[0].UpdatePolicy(ctx, authcache.TokenPolicy{}), "a zero expiry is refused")

	_, err = authcache.New("Bad Schema")
	require.ErrorContains(t, err, "authcache: ")
	var unloaded authcache.Plugin
	_, _, err = unloaded.Policy(ctx)
	require.Error(t, err)
}
