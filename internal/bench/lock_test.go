package bench

import "testing"

func TestLockSuiteRows(t *testing.T) {
	t.Parallel()
	want := map[string]string{"lock.uncontended.c1": "us", "lock.handoff.c8": "ops/s"}
	for _, i := range []string{"i8", "i32"} {
		want["lock.handoff."+i] = "ops/s"
		want["lock.handoff_max_wait."+i] = "us"
		want["lock.handoff_min_share."+i] = "share"
	}
	// PGCOORD_BENCH_LOCK_OPS=2000 measures at a realistic size (go test -v -run TestLockSuiteRows).
	runSuite(t, Lock, 64, "PGCOORD_BENCH_LOCK_OPS", "locks", want)
}
