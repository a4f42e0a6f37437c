package advisorylock_test

import (
	"os"
	"testing"

	"github.com/pgcoord/pgcoord/internal/pgtest"
)

func TestMain(m *testing.M) {
	// A re-executed test binary acting as a lock holder (see crash_test.go)
	// must not start a PostgreSQL server of its own.
	if os.Getenv(helperEnv) != "" {
		runHelper()
		return
	}
	pgtest.Main(m)
}
