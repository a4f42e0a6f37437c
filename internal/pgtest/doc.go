// Package pgtest gives every test of pgcoord a real, isolated PostgreSQL
// database.
//
// One server serves a whole test binary. It is found in this order:
//
//  1. PGCOORD_TEST_DATABASE_URL, if set (its role needs CREATEDB);
//  2. a testcontainers-go postgres:15 container, when a Docker engine answers
//     and PGCOORD_TEST_PG_BIN is not set;
//  3. a throwaway server started from local PostgreSQL binaries (initdb and
//     postgres in $PGCOORD_TEST_PG_BIN, else found on PATH or under
//     /usr/lib/postgresql/*/bin), run as the
//     postgres user when the test runs as root, on a free loopback port, in a
//     temporary directory removed at exit.
//
// On first use the server gets a template database with pgcoord's migrations
// applied; [NewDB] clones it (CREATE DATABASE … TEMPLATE) so each test has its
// own fresh database and tests run in parallel. [NewPrivateServer] starts a
// dedicated local server for tests that restart PostgreSQL.
//
// Use [Main] from TestMain: it starts the server, runs the tests, stops the
// server and fails the binary when goroutines leak.
package pgtest
