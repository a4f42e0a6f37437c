package demoschema_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pgcoord/pgcoord/internal/demo/demoschema"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Name puts the tables in "public" by default, keeps a valid name and
// refuses an invalid one with the plugin's prefix.
func TestName(t *testing.T) {
	t.Parallel()
	got, err := demoschema.Name("p", "")
	require.NoError(t, err)
	require.Equal(t, "public", got)
	got, err = demoschema.Name("p", "my_schema")
	require.NoError(t, err)
	require.Equal(t, "my_schema", got)
	for _, bad := range []string{`x"; DROP`, strings.Repeat("s", 100), "pg_catalog"} {
		_, err = demoschema.Name("asynctasks: Config.Schema", bad)
		require.ErrorContains(t, err, "asynctasks: Config.Schema: ", "%q", bad)
	}
}
