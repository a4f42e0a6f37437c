// Package integration holds pgcoord's cluster tests: several instances
// (pools, and separate OS processes for crash tests) against one database,
// fault injection, and checks of repository files such as docker-compose.yml.
package integration
