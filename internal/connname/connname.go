// Package connname names pgcoord's connections: every connection pgcoord
// opens or configures carries application_name
// "pgcoord/<app>/<instance>/<role>", so pg_stat_activity (and pgcoord
// inspect) tell whose connection it is and what it is for.
//
// PostgreSQL keeps at most 63 bytes of application_name and replaces bytes
// outside printable ASCII with '?'. [Name] does both itself, so the name it
// returns is exactly the one the server shows: when the full name is longer
// than 63 bytes, the app name keeps its first 16 bytes and the instance id
// keeps its last bytes (its most distinctive part: the pid and random
// suffix of a generated id); the role is always kept whole.
package connname

import "github.com/jackc/pgx/v5"

// Roles of pgcoord's connections.
const (
	// RolePool is every connection of a pool the app opened (cache, publishing, queue
	// inserts, River's own connections).
	RolePool = "pool"
	// RoleDirect is a connection of the direct pool (Config.DirectDatabaseURL).
	RoleDirect = "direct"
	// RoleListen is pub/sub's LISTEN connection.
	RoleListen = "listen"
	// RoleLockLiveness is advisorylock's liveness (identity) session.
	RoleLockLiveness = "lock-liveness"
	// RoleQueueLiveness is the event queue's liveness session.
	RoleQueueLiveness = "queue-liveness"
	// RoleWrapLock is a pgcache Wrap's cluster-wide lock connection.
	RoleWrapLock = "cache-wraplock"
	// RoleCheck is the app's short-lived LISTEN self-check at Start.
	RoleCheck = "check"
)

// Prefix starts every pgcoord application_name.
const Prefix = "pgcoord/"

// maxLen is PostgreSQL's limit (NAMEDATALEN - 1).
const maxLen = 63

// maxApp is how much of the app name a name that does not fit keeps.
const maxApp = 16

// Name returns the application_name of a connection with role of instance
// of app (see the package documentation for the form and the truncation).
func Name(app, instance, role string) string {
	app, instance, role = printable(app), printable(instance), printable(role)
	full := Prefix + app + "/" + instance + "/" + role
	if len(full) <= maxLen {
		return full
	}
	if len(app) > maxApp {
		app = app[:maxApp]
	}
	room := maxLen - len(Prefix) - len(app) - 2 - len(role)
	if room < 0 { // a role this long is not pgcoord's: cut from the end
		return full[:maxLen]
	}
	if len(instance) > room {
		instance = instance[len(instance)-room:]
	}
	return Prefix + app + "/" + instance + "/" + role
}

// printable replaces every byte outside printable ASCII with '?', as
// PostgreSQL does for application_name.
func printable(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 32 || c > 126 {
			b[i] = '?'
		}
	}
	return string(b)
}

// Set sets cc's application_name to Name(app, instance, role). It is for
// pgcoord's dedicated connections, which always carry their own name.
func Set(cc *pgx.ConnConfig, app, instance, role string) {
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	cc.RuntimeParams["application_name"] = Name(app, instance, role)
}

// SetDefault is Set unless cc already names an application_name (the
// user's own, e.g. in the database URL): a pool pgcoord opens for the
// user keeps the user's name.
func SetDefault(cc *pgx.ConnConfig, app, instance, role string) {
	if cc.RuntimeParams["application_name"] != "" {
		return
	}
	Set(cc, app, instance, role)
}
