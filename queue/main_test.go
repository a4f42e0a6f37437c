package queue_test

import (
	"os"
	"testing"

	"github.com/pgcoord/pgcoord/internal/pgtest"
)

func TestMain(m *testing.M) {
	// A re-exec of this binary playing a crashing instance (see
	// TestCrashedWorkerMessageIsRescued) needs no test server of its own.
	if os.Getenv(helperURLEnv) != "" {
		runCrashHelper()
		os.Exit(0)
	}
	pgtest.Main(m)
}
