package bench

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// startAll calls start for 0 … n-1, a few at a time (starting many instances
// one by one dominates a short run), and returns the first error.
func startAll(ctx context.Context, n int, start func(ctx context.Context, i int) error) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range n {
		g.Go(func() error { return start(ctx, i) })
	}
	return g.Wait()
}

// closeAll calls stop for 0 … n-1 concurrently and waits for them.
func closeAll(n int, stop func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); stop(i) }()
	}
	wg.Wait()
}

// contention is what one run of contend saw.
type contention struct {
	// elapsed is the run's wall time, grants the number of grants it made.
	elapsed time.Duration
	grants  int
	// perWaiter counts each waiter's grants.
	perWaiter []int
	// maxWait is the longest any waiter waited for one grant.
	maxWait time.Duration
}

// add merges another run of the same waiters into c.
func (c *contention) add(o contention) {
	c.elapsed += o.elapsed
	c.grants += o.grants
	if c.perWaiter == nil {
		c.perWaiter = make([]int, len(o.perWaiter))
	}
	for i, n := range o.perWaiter {
		c.perWaiter[i] += n
	}
	c.maxWait = max(c.maxWait, o.maxWait)
}

// rate is grants per second.
func (c contention) rate() float64 { return ratio(float64(c.grants), c.elapsed.Seconds()) }

// minShare is the least-served waiter's grants over an even share (1.0: every
// waiter got as many grants as the others; 0: some waiter got none).
func (c contention) minShare() float64 {
	if len(c.perWaiter) == 0 || c.grants == 0 {
		return 0
	}
	least := c.perWaiter[0]
	for _, n := range c.perWaiter {
		least = min(least, n)
	}
	return float64(least) * float64(len(c.perWaiter)) / float64(c.grants)
}

// contend runs waiters goroutines that share a budget of total grants: each
// takes one unit of the budget, then calls grant (which takes and releases
// the contended resource as waiter w), until the budget is spent. Unlike
// Run's fixed split, a waiter that is passed over gets fewer grants, so the
// per-waiter counts and the longest wait show (un)fairness. The first error
// stops the run.
func contend(ctx context.Context, waiters, total int, grant func(ctx context.Context, w int) error) (contention, error) {
	var (
		budget   atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	budget.Store(int64(total))
	out := contention{perWaiter: make([]int, waiters)}
	waits := make([]time.Duration, waiters)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	for w := range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for budget.Add(-1) >= 0 {
				t0 := time.Now()
				if err := grant(ctx, w); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
						cancel()
					}
					mu.Unlock()
					return
				}
				waits[w] = max(waits[w], time.Since(t0))
				out.perWaiter[w]++
			}
		}()
	}
	wg.Wait()
	out.elapsed = time.Since(start)
	for w, n := range out.perWaiter {
		out.grants += n
		out.maxWait = max(out.maxWait, waits[w])
	}
	return out, firstErr
}
