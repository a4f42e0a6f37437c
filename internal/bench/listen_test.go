package bench

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
)

func TestListenSuiteRows(t *testing.T) {
	t.Parallel()
	want := map[string]string{"listen.wakeups.c8": "reads"}
	for _, name := range []string{"listen.deliver_p50.c1", "listen.deliver_p99.c1", "listen.deliver_p50.c8", "listen.deliver_p99.c8", "listen.scale_p50.n48", "listen.scale_client_cpu.n48"} {
		want[name] = "us"
	}
	for _, name := range []string{"listen.throughput.c1", "listen.throughput.c8", "listen.scale.n48"} {
		want[name] = "ops/s"
	}
	// The server's CPU is read when it runs on this machine (the test
	// servers do).
	if _, ok := serverCPU(t.Context(), pgtest.NewDB(t).Pool); ok {
		want["listen.scale_server_cpu.n48"] = "us"
	}
	runSuite(t, Listen, 64, "PGCOORD_BENCH_LISTEN_OPS", "messages", want)
}

// TestCPUSampleSinceNeverNegative: a backend that ends between two samples
// (other sessions of a shared server come and go) is left out, not
// subtracted. Summing ticks over whatever processes were alive gave
// listen.scale_server_cpu.n48 = -358 µs in CI when a busy backend of another
// test ended during the run.
func TestCPUSampleSinceNeverNegative(t *testing.T) {
	before := cpuSample{1: 100, 2: 5000, 4: 30}
	after := cpuSample{1: 150, 3: 20, 4: 10}           // 2 ended; 3 is new; 4 is a reused pid (counts 0)
	require.InDelta(t, 0.7, after.since(before), 1e-9) // (50 + 20) ticks at 100 Hz
}
