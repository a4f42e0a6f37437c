package pgcoordtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/app"
)

// Cluster is N instances of one app on one database, in one test process.
type Cluster struct {
	// DB is the database the instances share.
	DB        *DB
	instances []*Instance
}

// Instance is one instance of a [Cluster].
type Instance struct {
	// App is the instance, started unless StartCluster was told otherwise.
	App *app.App
	// Pool is the instance's own pool (app.Config.Pool).
	Pool *pgxpool.Pool
	// ApplicationName is the application_name of every connection of the
	// instance: pgcoordtest/<app>/<instance id>.
	ApplicationName string

	db *DB
}

// StartCluster builds n instances of an app on db and starts them in order,
// failing the test when one does not start. The instances are stopped when
// the test ends.
//
// configure, when not nil, is called for each instance i (0-based) with the
// instance's configuration before app.New: Name defaults to "main" and
// InstanceID to "instance-<i>"; Pool is the instance's own pool and must not
// be replaced. Give each instance its own plugin values here (a plugin value
// belongs to one app).
func StartCluster(tb testing.TB, db *DB, n int, configure func(i int, cfg *app.Config)) *Cluster {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("pgcoordtest: StartCluster needs at least one instance, got %d", n)
	}
	c := &Cluster{DB: db}
	for i := range n {
		cfg := app.Config{Name: app.DefaultName, InstanceID: fmt.Sprintf("instance-%d", i)}
		if configure != nil {
			configure(i, &cfg)
		}
		if cfg.Pool != nil || cfg.DatabaseURL != "" || cfg.DirectDatabaseURL != "" {
			tb.Fatalf("pgcoordtest: instance %d: configure set Pool, DatabaseURL or DirectDatabaseURL; the cluster gives each instance its own pool", i)
		}
		name := "pgcoordtest/" + cfg.Name + "/" + cfg.InstanceID
		if len(name) > 63 { // PostgreSQL truncates application_name to 63 bytes
			name = name[:63]
		}
		in := &Instance{Pool: db.NewPool(tb, name), ApplicationName: name, db: db}
		cfg.Pool = in.Pool
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		a, err := app.New(ctx, cfg)
		if err != nil {
			cancel()
			tb.Fatalf("pgcoordtest: instance %d: %v", i, err)
		}
		in.App = a
		c.instances = append(c.instances, in)
		// Registered after the instance's pool: cleanups run last-in
		// first-out, so the instance stops (releasing locks, draining its
		// queue) while its pool is open, and instances stop in reverse
		// order, each with its own deadline.
		tb.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := a.Stop(ctx); err != nil {
				tb.Errorf("pgcoordtest: stop instance %d: %v", i, err)
			}
		})
		err = a.Start(ctx)
		cancel()
		if err != nil {
			tb.Fatalf("pgcoordtest: start instance %d: %v", i, err)
		}
	}
	return c
}

// Len returns the number of instances.
func (c *Cluster) Len() int { return len(c.instances) }

// Instance returns instance i (0-based).
func (c *Cluster) Instance(i int) *Instance { return c.instances[i] }

// App returns instance i's app.
func (c *Cluster) App(i int) *app.App { return c.instances[i].App }

// Cut ends every database session of the instance — its pool's connections,
// its LISTEN connection, its lock liveness session and River's — with
// pg_terminate_backend, and returns how many it ended. The instance keeps
// running and reconnects by itself; what pgcoord guarantees meanwhile is in
// docs/failure-model.md.
func (in *Instance) Cut(ctx context.Context) (int, error) {
	return in.db.TerminateBackends(ctx, in.ApplicationName)
}
