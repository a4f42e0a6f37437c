package app

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/internal/buildinfo"
	"github.com/pgcoord/pgcoord/internal/every"
	"github.com/pgcoord/pgcoord/migrations"
)

// DefaultHeartbeatInterval is how often an instance refreshes its row in the
// instance registry when Config.HeartbeatInterval is zero.
const DefaultHeartbeatInterval = 15 * time.Second

// Instance is one instance in the registry (see [App.Instances]).
type Instance struct {
	// App and ID name the instance (Config.Name and Config.InstanceID).
	App string `json:"app"`
	ID  string `json:"instance_id"`
	// Host and PID are the instance's host name and operating-system process id.
	Host string `json:"host"`
	PID  int    `json:"pid"`
	// Version is the pgcoord module version the instance was built with.
	Version string `json:"version"`
	// StartedAt is when the instance registered (database clock);
	// HeartbeatAt when it last refreshed its row.
	StartedAt   time.Time `json:"started_at"`
	HeartbeatAt time.Time `json:"heartbeat_at"`
	// LivenessPID is the backend pid of the instance's liveness session (the
	// advisorylock identity session; see pg_stat_activity).
	LivenessPID int `json:"liveness_pid"`
	// Alive is the database's view: the liveness session's backend still
	// exists and holds its advisory lock. A killed or partitioned instance
	// turns dead as soon as the server ends that backend (at once for a
	// killed process; within the advisorylock silence bound for a silent
	// one). Right after its liveness session reconnected, a live instance
	// may show dead until its next heartbeat records the new pid.
	Alive bool `json:"alive"`
	// Stats is the small snapshot of counters the instance wrote at its last
	// heartbeat (see [App.Instances]).
	Stats json.RawMessage `json:"stats"`
}

// aliveExpr is true while the backend i.liveness_pid lives and holds an
// advisory lock in this database (the identity lock of its liveness session).
const aliveExpr = `EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = i.liveness_pid AND l.locktype = 'advisory' AND l.granted
	AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))`

// registrySQL holds the registry's statements for one schema.
type registrySQL struct {
	upsert, remove, sweep, list string
}

func newRegistrySQL(schemaName string) registrySQL {
	t := pgx.Identifier{schemaName, "instances"}.Sanitize()
	return registrySQL{
		// $7 is the started_at of the first registration (NULL then): a row
		// swept while this instance could not reach the database comes back
		// with its original start time.
		// $9 is the listener's latest complete log read (listen's
		// Stats.LogReadAt, NULL before one): its lag is measured here, on
		// the database clock.
		upsert: `INSERT INTO ` + t + ` AS i (app, instance_id, host, pid, version, liveness_pid, stats, started_at)
			VALUES ($1, $2, $3, $4, $5, $6,
				$7::jsonb || jsonb_build_object('` + statListenerLag + `',
					coalesce(greatest(0, extract(epoch FROM now() - $9::timestamptz) * 1000)::bigint, -1)),
				coalesce($8, now()))
			ON CONFLICT (app, instance_id) DO UPDATE SET liveness_pid = excluded.liveness_pid, stats = excluded.stats, heartbeat_at = now()
			RETURNING started_at`,
		remove: `DELETE FROM ` + t + ` WHERE app = $1 AND instance_id = $2`,
		// A dead row is kept (and shown dead) until it missed a few
		// heartbeats, so a live instance whose liveness session just
		// reconnected is not swept before it records its new pid.
		sweep: `DELETE FROM ` + t + ` i WHERE heartbeat_at < now() - $1::interval AND NOT ` + aliveExpr,
		list: `SELECT app, instance_id, host, pid, version, started_at, heartbeat_at, liveness_pid, ` + aliveExpr + `, stats
			FROM ` + t + ` i WHERE app = $1 OR $1 IS NULL ORDER BY app, started_at, instance_id`,
	}
}

// register writes this instance's row (at Start and at every heartbeat).
func (a *App) register(ctx context.Context) error {
	_, pid := a.locks.Liveness()
	stats, err := json.Marshal(a.statsSnapshot())
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	var started *time.Time
	if !a.startedAt.IsZero() {
		started = &a.startedAt
	}
	var readAt *time.Time
	if t := a.pubsub.Stats().LogReadAt; !t.IsZero() {
		readAt = &t
	}
	var at time.Time
	if err := a.pool.QueryRow(ctx, a.reg.upsert, a.cfg.Name, a.cfg.InstanceID, host, os.Getpid(), buildinfo.Version(),
		int64(pid), string(stats), started, readAt).Scan(&at); err != nil {
		return fmt.Errorf("app: register instance: %w", err)
	}
	a.startedAt = at // only the heartbeat goroutine writes it after Start
	return nil
}

// statsSnapshot is the small jsonb snapshot of the registry row (the
// listener lag is added by the upsert).
func (a *App) statsSnapshot() map[string]any {
	ps := a.pubsub.Stats()
	ls := a.locks.Stats()
	var caches []CacheStats
	for _, c := range a.caches.Caches() {
		if len(caches) == maxSnapshotCaches {
			break
		}
		st := c.Stats()
		caches = append(caches, CacheStats{Name: c.Name(), Prefix: c.Prefix(), Store: c.Store(),
			Hits: st.Hits, Misses: st.Misses, NearHits: st.NearHits, NearMisses: st.NearMisses})
	}
	return map[string]any{
		statCaches:           caches,
		"published":          ps.Published,
		"delivered":          ps.Delivered,
		"listen_reconnects":  ps.Reconnects,
		"listen_lost":        ps.Lost,
		"locks_held":         ls.Held,
		"locks_lost":         ls.Lost,
		"handler_errors":     ps.HandlerErrors,
		"listen_log_reads":   ps.LogReads,
		"locks_acquired":     ls.Acquired,
		"locks_contended":    ls.Contended,
		"listen_caught_up":   ps.CaughtUp,
		"listen_dropped":     ps.Dropped,
		"listen_recovered":   ps.Recovered,
		"listen_switchovers": ps.Switchovers,
	}
}

// Keys of the stats snapshot that are not plain counters.
const (
	statListenerLag = "listener_lag_ms"
	statCaches      = "caches"
)

// maxSnapshotCaches bounds the caches listed in one stats snapshot.
const maxSnapshotCaches = 64

// InstanceStats is an instance's stats snapshot ([Instance].Stats), decoded
// by [Instance.DecodeStats].
type InstanceStats struct {
	// Counters are the snapshot's numbers, by key: published, delivered,
	// listen_reconnects, locks_held, ... (see docs/observability.md), and
	// listener_lag_ms.
	Counters map[string]int64
	// ListenerLagMillis is how far behind the instance's pub/sub listener
	// was at its last heartbeat: the database's now() minus the time of the
	// listener's latest complete read of the log (listen's
	// Stats.LogReadAt). Every message committed before that read has been
	// handed to the instance's subscriptions. A healthy listener reads the
	// log at least every listen PollInterval (default 1 s), so the lag stays
	// under about a second; it grows while the listener is disconnected or
	// catching up. -1 when unknown (no complete read yet, or an instance
	// running a pgcoord without this figure).
	ListenerLagMillis int64
	// Caches are the instance's caches (at most 64) with their read
	// counters since they were created on it.
	Caches []CacheStats
}

// CacheStats is one cache's read counters in a stats snapshot.
type CacheStats struct {
	// Name and Prefix name the cache (pgcache.CacheConfig), Store is its
	// store (postgres, memory).
	Name   string `json:"name"`
	Prefix string `json:"prefix"`
	Store  string `json:"store"`
	// Hits and Misses count reads by key; Hits include NearHits, the reads
	// the near-cache answered without a round trip. NearMisses counts
	// near-cache lookups that went on to the database (both stay 0 without
	// a near-cache).
	Hits       uint64 `json:"hits"`
	Misses     uint64 `json:"misses"`
	NearHits   uint64 `json:"near_hits"`
	NearMisses uint64 `json:"near_misses"`
}

// DecodeStats decodes the instance's stats snapshot. Entries it does not
// know are left out, so it reads the snapshots of older and newer pgcoord
// versions; a malformed snapshot decodes as empty (ListenerLagMillis -1).
func (in Instance) DecodeStats() InstanceStats {
	out := InstanceStats{Counters: map[string]int64{}, ListenerLagMillis: -1}
	var raw map[string]json.RawMessage
	if json.Unmarshal(in.Stats, &raw) != nil {
		return out
	}
	for k, v := range raw {
		if k == statCaches {
			_ = json.Unmarshal(v, &out.Caches) // malformed: no caches
			continue
		}
		var n int64
		if json.Unmarshal(v, &n) == nil && string(v) != "null" {
			out.Counters[k] = n
		}
	}
	if n, ok := out.Counters[statListenerLag]; ok {
		out.ListenerLagMillis = n
	}
	return out
}

// runHeartbeat refreshes this instance's row and sweeps dead instances'
// rows every HeartbeatInterval until ctx ends. A failed heartbeat is retried
// at the next tick (the row is re-created if it was swept meanwhile).
func (a *App) runHeartbeat(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	every.Run(ctx, a.cfg.HeartbeatInterval, func(ctx context.Context) {
		if err := a.register(ctx); err != nil {
			if ctx.Err() == nil {
				a.logger.WarnContext(ctx, "pgcoord: instance heartbeat failed", slog.Any("error", err))
			}
			return
		}
		// Three missed heartbeats of this instance's interval.
		if _, err := a.pool.Exec(ctx, a.reg.sweep, (3 * a.cfg.HeartbeatInterval).String()); err != nil && ctx.Err() == nil {
			a.logger.WarnContext(ctx, "pgcoord: sweeping dead instances failed", slog.Any("error", err))
		}
	})
}

// deregister deletes this instance's row (at Stop). A failure (the
// database is gone, or the user closed the pool before Stop) is logged, not
// returned: the row turns dead with the liveness session and is swept.
func (a *App) deregister(ctx context.Context) error {
	if _, err := a.pool.Exec(ctx, a.reg.remove, a.cfg.Name, a.cfg.InstanceID); err != nil {
		a.logger.InfoContext(ctx, "pgcoord: instance row not deleted at stop; it shows dead and is swept", slog.Any("error", err))
	}
	return nil
}

// Instances lists the registered instances of this app, live and dead
// (a dead instance's row is swept once it has missed three heartbeats of
// the sweeping instance), oldest first. It reads the registry table through the
// pool and works before Start and after Stop while the pool is open.
func (a *App) Instances(ctx context.Context) ([]Instance, error) {
	name := a.cfg.Name
	return ListInstances(ctx, a.pool, a.cfg.Schema, &name)
}

// ListInstances lists the registered instances of the app named app (every
// app's when app is nil) in schemaName, as [App.Instances] does; pgcoord
// inspect uses it.
func ListInstances(ctx context.Context, db interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, schemaName string, app *string,
) ([]Instance, error) {
	if err := migrations.ValidateSchema(schemaName); err != nil {
		return nil, fmt.Errorf("app: list instances: %w", err)
	}
	rows, err := db.Query(ctx, newRegistrySQL(schemaName).list, app)
	if err != nil {
		return nil, fmt.Errorf("app: list instances: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Instance, error) {
		var in Instance
		err := r.Scan(&in.App, &in.ID, &in.Host, &in.PID, &in.Version, &in.StartedAt, &in.HeartbeatAt, &in.LivenessPID, &in.Alive, &in.Stats)
		return in, err
	})
	if err != nil {
		return nil, fmt.Errorf("app: list instances: %w", err)
	}
	return out, nil
}
