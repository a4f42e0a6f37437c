package integration_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/faultproxy"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// TestClusterFaults runs the cluster workload on a private PostgreSQL server
// while it SIGKILLs a node and starts a replacement, terminates every backend
// of every node several times, and restarts PostgreSQL itself. The same
// invariants as the steady run must hold, except that a queue message whose
// worker was killed may run a second time.
func TestClusterFaults(t *testing.T) {
	t.Parallel()
	srv := pgtest.NewPrivateServer(t)
	db := srv.NewDB(t)
	var kills, terminated, restarts int
	c := runCluster(t, db, clusterOpts{
		URL:      db.URL,
		AdminURL: srv.AdminURL(),
		Nodes:    3,
		Run:      runDuration(20 * time.Second),
		Faults: func(ctx context.Context, c *cluster) {
			// One cycle is 21 s: the default run has one of each fault
			// (PostgreSQL restarts 13 s in); -long repeats the cycle. The
			// first cycle always runs to its end, however slow the machine
			// (the workload goes on until it has): on a loaded machine the
			// run's clock must not skip a fault the test then asserts on.
			for cycle := 0; cycle == 0 || ctx.Err() == nil; cycle++ {
				steps := []struct {
					after time.Duration
					do    func()
				}{
					{time.Second, func() {
						victim := c.live()[0].id
						c.kill(victim)
						kills++
						c.startNode(true)
					}},
					{3 * time.Second, func() { terminated += c.terminateAll() }},
					{3 * time.Second, func() { terminated += c.terminateAll() }},
					{3 * time.Second, func() { terminated += c.terminateAll() }},
					{3 * time.Second, func() {
						rctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
						defer cancel()
						if err := srv.Restart(rctx); err != nil {
							t.Errorf("restart PostgreSQL: %v", err) // not FailNow: runs off the test goroutine
							return
						}
						restarts++
					}},
					{4 * time.Second, func() { terminated += c.terminateAll() }},
					{4 * time.Second, func() {}},
				}
				for _, s := range steps {
					if cycle == 0 {
						<-time.After(s.after) // pacing, not a wait for a condition
					} else {
						select {
						case <-ctx.Done():
							return
						case <-time.After(s.after):
						}
					}
					s.do()
				}
			}
		},
	})
	t.Logf("faults: %d SIGKILLs (each followed by a new node), %d backends terminated, %d PostgreSQL restarts", kills, terminated, restarts)
	require.Positive(t, kills)
	require.Positive(t, restarts)
	require.GreaterOrEqual(t, len(c.live()), 3)
}

// TestNodeStartWaitsForTheServer: a node whose database is unreachable while
// it starts (PostgreSQL restarting under a slow machine, as in
// TestClusterFaults) keeps trying, backing off like an orchestrator would,
// and is ready once the server answers again: a run fails when an invariant
// breaks, not because a start raced a restart.
func TestNodeStartWaitsForTheServer(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	proxy, url := faultproxy.StartFor(t, db.URL)
	target, err := faultproxy.HostPort(db.URL)
	require.NoError(t, err)
	proxy.SetTarget("127.0.0.1:1") // refused: the server is down for the node
	c := startCluster(t, db, clusterOpts{URL: url, AdminURL: db.Server.AdminURL(), Nodes: 0, Run: time.Minute})
	id := c.startNode(false)
	// Ten failed attempts: more than a restart under load used to allow.
	require.True(t, c.waitFor(2*time.Minute, "ten failed start attempts", func() bool {
		p := c.nodes[id]
		select {
		case <-p.exited:
			return true // fails below
		default:
		}
		return p.inc > 10
	}))
	proxy.SetTarget(target)
	c.waitReady()
}
