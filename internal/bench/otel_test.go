package bench

import "testing"

func TestOtelSuiteRows(t *testing.T) {
	t.Parallel()
	runSuite(t, Otel, 40, "PGCOORD_BENCH_OTEL_OPS", "messages", map[string]string{"otel.cache.get.c1": "us", "otel.listen.deliver_p50.c1": "us"})
}
