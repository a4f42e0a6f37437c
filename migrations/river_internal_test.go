package migrations

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/schema"
)

// TestRiverVersionsCovered fails when the pinned River has a migration version
// that no goose migration installs (see riverVersions).
func TestRiverVersionsCovered(t *testing.T) {
	t.Parallel()
	m, err := newRiverMigrator(nil, DefaultSchema)
	require.NoError(t, err)
	covered := map[int]bool{}
	seenGoose := map[int64]bool{}
	for _, v := range riverVersions {
		covered[v.river] = true
		require.False(t, seenGoose[v.goose], "goose version %d used twice", v.goose)
		seenGoose[v.goose] = true
	}
	for _, rv := range m.AllVersions() {
		require.True(t, covered[rv.Version], "River migration %d (%s) has no goose migration: add it to riverVersions", rv.Version, rv.Name)
	}
	// SQL files never reuse a River goose version.
	for _, km := range allMigrations(DefaultSchema) {
		if km.name[:6] != "river_" {
			require.False(t, seenGoose[km.Version], "SQL migration %s reuses River's goose version %d", km.name, km.Version)
		}
	}
}

// The leaf package internal/schema, which runtime packages use to check the
// database at Start, expects exactly the versions this package installs.
func TestSchemaVersionMatchesMigrations(t *testing.T) {
	t.Parallel()
	ms := allMigrations(DefaultSchema)
	for i, m := range ms {
		require.EqualValues(t, i+1, m.Version, "versions are 1..N without gaps")
	}
	require.Equal(t, schema.Version, LatestVersion())
	m, err := newRiverMigrator(nil, DefaultSchema)
	require.NoError(t, err)
	all := m.AllVersions()
	require.Equal(t, schema.RiverVersion, all[len(all)-1].Version)
	require.EqualValues(t, schema.RiverVersion, riverVersions[len(riverVersions)-1].river)
}
