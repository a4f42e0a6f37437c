// Package pgcoordtest is for testing applications built on pgcoord, in the
// application's own test suite: a real PostgreSQL, a migrated database per
// test, a cluster of N instances of an [app.App] in one test process, faults
// on one instance's connections, and waits on conditions instead of sleeps.
// It is to pgcoord what rivertest is to River.
//
// # The server
//
// One PostgreSQL server serves a whole test binary. It is found in this
// order:
//
//  1. PGCOORD_TEST_DATABASE_URL ([EnvDatabaseURL]), when set: an existing
//     server whose role may create databases;
//  2. a testcontainers-go postgres container, when a Docker engine answers;
//  3. a throwaway server started from local PostgreSQL binaries (initdb and
//     postgres on PATH or under /usr/lib/postgresql/*/bin), on a free
//     loopback port, removed when the test binary exits.
//
// Call [Main] from TestMain so the server is started once and stopped at the
// end:
//
//	func TestMain(m *testing.M) { pgcoordtest.Main(m) }
//
// # Databases and clusters
//
// [NewDB] gives a test its own database with pgcoord's migrations applied
// (cloned from a template, so it is fast), dropped when the test ends; tests
// using it may run in parallel. [StartCluster] starts N instances of an app on
// that database, each with its own pool (its own connections, as separate
// processes would have), and stops them when the test ends. Each instance's
// connections carry the application_name pgcoordtest/<app>/<instance>, so
// [Instance.Cut] can end exactly that instance's sessions (its pool, its
// LISTEN connection, its lock liveness session, River's) with
// pg_terminate_backend, the way a network blip or a server-side kill would.
//
// # Waiting
//
// Cluster behaviour is asynchronous. [Receive] waits for a value on a channel
// (a handler's signal) and [WaitFor] for a condition checked against the
// database; both fail the test after [DefaultTimeout] with a message naming
// what was awaited. Neither sleeps a fixed time.
package pgcoordtest
