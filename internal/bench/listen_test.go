package bench

import (
	"testing"

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
