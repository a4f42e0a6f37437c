package listen

import (
	"os"
	"testing"

	"github.com/pgcoord/pgcoord/internal/pgtest"
)

func TestMain(m *testing.M) {
	if os.Getenv(envHelperRole) != "" {
		// A child process of a crash test: it uses the parent's database.
		os.Exit(m.Run())
	}
	pgtest.Main(m)
}
