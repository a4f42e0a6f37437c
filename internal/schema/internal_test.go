package schema

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCheckServer(t *testing.T) {
	t.Parallel()
	err := checkServer(130011)
	require.ErrorIs(t, err, ErrServerTooOld)
	require.ErrorContains(t, err, "130011")
	require.ErrorContains(t, err, "PostgreSQL 14 or newer")
	require.NoError(t, checkServer(140000))
	require.NoError(t, checkServer(180004))
}

func TestCompare(t *testing.T) {
	t.Parallel()
	all := make([]int64, 0, Version)
	for v := int64(1); v <= Version; v++ {
		all = append(all, v)
	}
	require.NoError(t, compare("pgcoord", all, RiverVersion))

	var ve *VersionError
	err := compare("pgcoord", all[:len(all)-1], RiverVersion)
	require.ErrorIs(t, err, ErrOutdated)
	require.True(t, errors.As(err, &ve))
	require.Equal(t, []int64{Version}, ve.Missing)

	err = compare("pgcoord", append(all[:8:8], all[9:]...), RiverVersion)
	require.ErrorContains(t, err, "missing 9)")
	err = compare("pgcoord", nil, 0)
	require.ErrorContains(t, err, fmt.Sprintf(`schema "pgcoord" is at version 0, this pgcoord needs version %d (missing 1-%d)`, Version, Version))

	err = compare("pgcoord", append(all, Version+1), RiverVersion)
	require.ErrorIs(t, err, ErrTooNew)
	require.False(t, errors.Is(err, ErrOutdated))

	err = compare("pgcoord", all, RiverVersion-1)
	require.ErrorIs(t, err, ErrOutdated)
	require.ErrorContains(t, err, "River's own record (river_migration) is at 7")
}
