// Package lockkey derives every PostgreSQL advisory-lock key pgcoord takes.
// Advisory locks live in one key space per database, shared by every schema,
// every application and pgcoord; this package is the one place that decides
// where in that space pgcoord's locks are (docs/advisory-locks.md).
//
// The namespace: every bigint key is
//
//	Class<<48 | low 48 bits of SHA-256(schema 0x00 purpose {0x00 part})
//
// read big-endian from the digest's first 8 bytes. So every key pgcoord
// takes lies in [MinKey, MaxKey], whatever the schema, app or name; an
// application whose own bigint keys stay outside that range (any int4, any
// hashtext value, any key below 0x7063_0000_0000_0000) can never collide
// with pgcoord. Within the range, the schema (configurable in every
// component) and the purpose separate the users: two purposes or two schemas
// meet only by a 48-bit hash collision. The one two-int key pgcoord takes,
// the instance identity of advisorylock, has the class [IdentityClass].
//
// The derivation is part of the mutual exclusion between instances: a release
// that changes it must say so in the CHANGELOG as an upgrade rule (old and new
// instances must not run side by side). [TestGolden] pins the values.
package lockkey

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strings"
)

// Class is the high 16 bits of every bigint key pgcoord takes ("pc").
const Class = 0x7063

// MinKey and MaxKey bound every bigint key pgcoord takes.
const (
	MinKey int64 = Class << 48
	MaxKey int64 = Class<<48 | lowMask
)

const lowMask = 1<<48 - 1

// Purpose names what a lock serializes; each has its own keys.
type Purpose string

// The purposes of pgcoord's advisory locks, with the parts each key takes
// after the schema.
const (
	// Migrations serializes migration runs of a schema (goose's session
	// lock and pgcoord's own transaction). No parts.
	Migrations Purpose = "migrations"
	// ListenPrune elects the pruner of an app's message log. Parts: app.
	ListenPrune Purpose = "listen.prune"
	// CacheSweep elects the expiry sweeper of an app's caches. Parts: app.
	CacheSweep Purpose = "pgcache.sweep"
	// CacheEvict elects the MaxEntries evictor of a cache. Parts: app, prefix.
	CacheEvict Purpose = "pgcache.evict"
	// CacheWrap is ClusterSingleFlight's lock of one key. Parts: app, prefix, key.
	CacheWrap Purpose = "pgcache.wrap"
	// CacheNear guards a prefix's near-cache registry: writers shared,
	// registration exclusive. Parts: app, prefix.
	CacheNear Purpose = "pgcache.near"
	// Liveness is an instance's liveness session (internal/liveness; the
	// queue's). Parts: instance id.
	Liveness Purpose = "liveness"
	// LivenessLock is a leadership held on a liveness session (the queue's
	// rescuer election). Parts: name.
	LivenessLock Purpose = "liveness.lock"
	// Demo serializes the table setup of a demo plugin (internal/demo).
	// Parts: plugin name.
	Demo Purpose = "demo"
)

// identity is the purpose of [IdentityClass].
const identity Purpose = "advisorylock.identity"

// Key returns the bigint advisory-lock key of (schema, purpose, parts).
func Key(schema string, p Purpose, parts ...string) int64 {
	sum := sha256.Sum256(material(schema, p, parts))
	return MinKey | int64(binary.BigEndian.Uint64(sum[:8])&lowMask)
}

// IdentityClass returns the class (first int4) of advisorylock's two-int
// instance-identity locks (class, owner_id) in schema. The two-int key space
// is separate from the bigint one; this is the only two-int class pgcoord
// uses, one per schema.
func IdentityClass(schema string) int32 {
	sum := sha256.Sum256(material(schema, identity, nil))
	return int32(binary.BigEndian.Uint32(sum[:4])) //nolint:gosec // a lock class: wrap-around is the point
}

func material(schema string, p Purpose, parts []string) []byte {
	b := make([]byte, 0, len(schema)+len(p)+64)
	b = append(b, schema...)
	b = append(b, 0)
	b = append(b, p...)
	for _, part := range parts {
		b = append(b, 0)
		b = append(b, part...)
	}
	return b
}

// SQL returns a SQL expression that computes [Key] inside a query, for keys
// that must be derived per row (the queue's "is this owner alive" test reads
// pg_locks for every candidate job). schemaExpr and partExprs are SQL text
// expressions (parameters such as "$2::text" or column names, never user
// strings); p is a constant of this package.
func SQL(schemaExpr string, p Purpose, partExprs ...string) string {
	var b strings.Builder
	b.WriteString("convert_to(" + schemaExpr + ", 'UTF8') || '\\x00'::bytea || convert_to('" + string(p) + "', 'UTF8')")
	for _, e := range partExprs {
		b.WriteString(" || '\\x00'::bytea || convert_to(" + e + ", 'UTF8')")
	}
	return fmt.Sprintf("(%d::bigint | (('x' || encode(substring(sha256(%s) from 1 for 8), 'hex'))::bit(64)::bigint & %d::bigint))",
		MinKey, b.String(), int64(lowMask))
}
