// Package every runs a background task on a fixed interval: the one loop
// behind listen's pruner, pgcache's sweeper and near-cache registration
// renewal, and app's heartbeat.
package every

import (
	"context"
	"time"
)

// Run calls fn every interval (the first call one interval after Run
// starts) until ctx ends. Calls never overlap: a call that outlasts the
// interval delays the next tick. fn reports its own errors; it should
// return promptly once ctx ends.
func Run(ctx context.Context, interval time.Duration, fn func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if ctx.Err() != nil {
			return
		}
		fn(ctx)
	}
}
