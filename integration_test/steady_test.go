package integration_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// TestClusterSteady runs three node processes against one database with the
// mixed workload (near-cache writes and reads, sync messages, pub/sub, queue,
// lock-guarded counter) and no faults, then checks every invariant: see
// cluster.check.
func TestClusterSteady(t *testing.T) {
	_, db := pgtest.Setup(t)
	c := runCluster(t, db, clusterOpts{
		URL:      db.URL,
		AdminURL: db.Server.AdminURL(),
		Nodes:    3,
		Run:      runDuration(20 * time.Second),
	})
	require.Len(t, c.live(), 3)
}
