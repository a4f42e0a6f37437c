package connname_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/connname"
)

func TestName(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		app, instance, role, want string
	}{
		"fits":        {"main", "host-12-ab", connname.RoleListen, "pgcoord/main/host-12-ab/listen"},
		"non-ascii":   {"ümlaut", "i\n1", connname.RolePool, "pgcoord/??mlaut/i?1/pool"},
		"long":        {strings.Repeat("a", 40), "host-" + strings.Repeat("x", 40) + "-4242-tail", connname.RoleLockLiveness, "pgcoord/aaaaaaaaaaaaaaaa/xxxxxxxxxxxxxx-4242-tail/lock-liveness"},
		"long role":   {"a", "b", strings.Repeat("r", 70), ("pgcoord/a/b/" + strings.Repeat("r", 70))[:63]},
		"exactly fit": {"a", strings.Repeat("i", 63-len("pgcoord/a//pool")), connname.RolePool, "pgcoord/a/" + strings.Repeat("i", 48) + "/pool"},
	} {
		t.Run(name, func(t *testing.T) {
			got := connname.Name(tc.app, tc.instance, tc.role)
			require.Equal(t, tc.want, got)
			require.LessOrEqual(t, len(got), 63)
		})
	}
}
