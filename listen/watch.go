package listen

import "sync/atomic"

// PubSub.watch (a broadcast.Signal) wakes whoever waits for a PubSub's
// observable state to change: Healthy, a Stats counter, a handler or
// OnResync call having returned. Tests wait on it instead of polling.

// setHealthy sets Healthy.
func (ps *PubSub) setHealthy(v bool) {
	ps.healthy.Store(v)
	ps.watch.Notify()
}

// count adds n to a Stats counter.
func (ps *PubSub) count(c *atomic.Int64, n int64) {
	c.Add(n)
	ps.watch.Notify()
}
