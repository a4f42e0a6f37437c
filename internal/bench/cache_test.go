package bench

import "testing"

func TestCacheSuiteRows(t *testing.T) {
	t.Parallel()
	want := map[string]string{"cache.get.c64": "ops/s"}
	for _, name := range []string{"cache.get.c1", "cache.get.c8", "cache.set.c1", "cache.mget100.c1", "cache.mget100_bytes.c1", "cache.near_set.c1", "cache.near_hit.c1", "cache.near_hit_bytes.c1"} {
		want[name] = "us"
	}
	runSuite(t, Cache, 100, "PGCOORD_BENCH_CACHE_OPS", "cache_entries", want)
}
