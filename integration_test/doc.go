// Package integration holds pgcoord's cluster tests: several instances
// (pools, and separate OS processes for crash tests) against one database,
// fault injection, and checks of repository files such as docker-compose.yml.
//
// # Cluster runs
//
// A node is this test binary re-executed with -test.run=^TestNodeProcess$
// (node_test.go): one app.App per process running a bounded mixed workload
// through the public API (near-cache writes and reads, sync messages, pub/sub,
// queue messages, and a counter row incremented under RunExclusive + CheckTx)
// and reporting everything it did and saw as JSON lines on stdout. The parent
// (cluster_test.go) starts the nodes, injects faults, drains, stops them, and
// checks:
//
//   - sync messages and pub/sub: every committed message reached every other
//     live node exactly once, never its sender (a node started mid-run: every
//     message from its first one on);
//   - queue: every committed message completed; only a message whose worker
//     was SIGKILLed ran again, once, on a live node; nothing else is left in
//     river_job;
//   - counter: exact (n equals the number of committed increments, whose
//     values are exactly 1..n, and every acknowledged increment is among them);
//   - cache: read-your-writes on the writer, monotonic reads on every node, no
//     value older than an announced write served for more than 5 s after the
//     announcement reached the node, and at the end every node reads every key
//     as PostgreSQL holds it, which is the last committed write.
//
// TestClusterSteady runs three nodes for 20 s; TestClusterFaults runs them on a
// private server and SIGKILLs a node (starting a new one), terminates every
// backend of every node three times, restarts PostgreSQL, and terminates again.
// go test -run TestCluster -args -long runs each for three minutes.
//
// # Privileges and isolation
//
// TestPrivilegeSchemaOwner and TestPrivilegeRuntimeRole run the cluster under
// a non-superuser role on a hardened database, with the GRANTs documented in
// docs/privileges.md. TestAppIsolation checks that two apps on one database
// share nothing in any primitive.
//
// # Fuzzing
//
// The bad-input fuzz targets live next to the code they exercise
// (listen, pgcache, advisorylock and queue fuzz_test.go); their seeds run
// with every go test. To fuzz (each fuzz worker starts its own PostgreSQL; the
// megabyte seeds make input minimization slow, hence -fuzzminimizetime 0):
//
//	go test -run '^$' -fuzz FuzzPublish -fuzztime 1m -fuzzminimizetime 0 -parallel 1 ./listen/
package integration
