package advisorylock

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// Fairness under load: 6 instances (one with two waiters, so in-instance
// handoffs mix with designations) loop on one key until 140 grants are made:
// every waiter is served, and the longest wait is logged in grants to other
// instances between an instance joining the key's FIFO (the onQueued hook)
// and its grant. (Strict FIFO order is asserted by
// TestInstancesServedInArrivalOrderRoundRobin; here the longest wait is
// usually at most one grant per other instance, but runs of up to 3× that
// were seen and are not explained yet, so it is not asserted.)
func TestFairnessEveryWaiterServed(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const instances, budget = 6, 140
	var (
		mu      sync.Mutex
		grants  int             // grants made so far
		entered = map[int]int{} // instance → grants when it joined the FIFO
		maxGap  int
	)
	managers := make([]*Manager, instances)
	for i := range managers {
		pool := db.NewPool(t, &pgtest.PoolOptions{AppName: fmt.Sprintf("inst-%d", i), MaxConns: 4})
		m, err := New(pool, &Config{InstanceID: fmt.Sprintf("inst-%d", i), PollInterval: time.Hour})
		require.NoError(t, err)
		m.onQueued = func() {
			mu.Lock()
			if _, ok := entered[i]; !ok {
				entered[i] = grants
			}
			mu.Unlock()
		}
		require.NoError(t, m.Start(ctx))
		t.Cleanup(func() { require.NoError(t, m.Close(context.Background())) })
		managers[i] = m
	}
	waiters := []int{0, 1, 2, 3, 4, 5, 5}
	served := make([]int, len(waiters))
	var left atomic.Int64
	left.Store(budget)
	g, gctx := errgroup.WithContext(ctx)
	for w, i := range waiters {
		g.Go(func() error {
			for left.Add(-1) >= 0 {
				l, err := managers[i].Acquire(gctx, "k", time.Minute)
				if err != nil {
					return err
				}
				mu.Lock()
				if at, ok := entered[i]; ok {
					maxGap = max(maxGap, grants-at)
					delete(entered, i)
				}
				grants++
				served[w]++
				mu.Unlock()
				if err := l.Release(gctx); err != nil {
					return err
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	require.Equal(t, budget, grants)
	for w, n := range served {
		require.Positive(t, n, "waiter %d (instance %d) starved", w, waiters[w])
	}
	var designated, handoffs int64
	for _, m := range managers {
		designated += m.Stats().Designated
		handoffs += m.Stats().Handoffs
	}
	require.Positive(t, designated)
	t.Logf("served %v, longest wait %d grants, designated %d, in-instance handoffs %d", served, maxGap, designated, handoffs)
}
