package bench

import "testing"

func TestListenSuiteRows(t *testing.T) {
	t.Parallel()
	want := map[string]string{"listen.wakeups.c8": "reads"}
	for _, name := range []string{"listen.deliver_p50.c1", "listen.deliver_p99.c1", "listen.deliver_p50.c8", "listen.deliver_p99.c8", "listen.scale_p50.n48"} {
		want[name] = "us"
	}
	for _, name := range []string{"listen.throughput.c1", "listen.throughput.c8", "listen.scale.n48"} {
		want[name] = "ops/s"
	}
	runSuite(t, Listen, 64, "PGCOORD_BENCH_LISTEN_OPS", "messages", want)
}
