package bench

import "testing"

func TestQueueSuiteRows(t *testing.T) {
	t.Parallel()
	want := map[string]string{"queue.throughput": "ops/s", "queue.throughput_defaults": "ops/s", "queue.throughput_envelope": "ops/s"}
	for _, name := range []string{"queue.latency_p50", "queue.latency_p99", "queue.latency_p50_defaults"} {
		want[name] = "us"
	}
	// PGCOORD_BENCH_QUEUE_OPS=20000 runs the realistic size.
	runSuite(t, Queue, 200, "PGCOORD_BENCH_QUEUE_OPS", "", want)
}
