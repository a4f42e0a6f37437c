package migrations

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRiverVersionsCovered fails when the pinned River has a migration version
// that no goose migration installs (see riverVersions).
func TestRiverVersionsCovered(t *testing.T) {
	t.Parallel()
	m, err := newRiverMigrator(DefaultSchema)
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
