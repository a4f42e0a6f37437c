package obslog_test

import (
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pgcoord/pgcoord/internal/obslog"
	"github.com/pgcoord/pgcoord/internal/obslog/obslogtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a manual clock: time moves only in advance, which runs the
// callbacks that fall due.
type clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*timer
}

type timer struct {
	c       *clock
	at      time.Time
	f       func()
	stopped bool // guarded by c.mu; also set once fired
}

func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) AfterFunc(d time.Duration, f func()) obslog.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

// advance moves the clock by d and runs, in order, the callbacks due.
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	for _, t := range c.timers {
		if !t.stopped && !t.at.After(c.now) {
			t.stopped = true
			due = append(due, t.f)
		}
	}
	c.mu.Unlock()
	for _, f := range due {
		f()
	}
}

// count returns how many lines have each level.
func count(lines []obslogtest.Line) map[slog.Level]int {
	out := map[slog.Level]int{}
	for _, l := range lines {
		out[l.Level]++
	}
	return out
}

const (
	repeat = 30 * time.Second
	quiet  = 5 * time.Second
)

// newLogger returns a logger on obslog with a manual clock, the lines it
// writes and its clock.
func newLogger() (*slog.Logger, *obslogtest.Capture, *clock) {
	c := &obslogtest.Capture{}
	clk := &clock{now: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)}
	h := obslog.New(c, obslog.Config{Repeat: repeat, Quiet: quiet, Now: clk.Now, AfterFunc: clk.AfterFunc},
		slog.String(obslog.KeyApp, "main"), slog.String(obslog.KeyInstanceID, "i1"))
	return slog.New(h), c, clk
}

// An outage that ends with the component's own INFO line: one WARN at its
// start, one repeat per Repeat carrying the count suppressed so far, and the
// INFO line with the total; nothing when the quiet timer would have fired.
func TestOutageEndedByInfo(t *testing.T) {
	t.Parallel()
	log, out, clk := newLogger()
	listen := log.With(obslog.KeyComponent, "listen")

	listen.Warn("listen: listener connection lost")
	var lines []obslogtest.Line
	for range 400 { // a failed reconnect every 100 ms for 40 s
		clk.advance(100 * time.Millisecond)
		listen.Error("listen: reconnect failed")
		lines = append(lines, out.Take()...)
	}
	require.Equal(t, map[slog.Level]int{slog.LevelWarn: 1, slog.LevelError: 1}, count(lines), "%+v", lines)
	require.Equal(t, "listen: listener connection lost", lines[0].Msg)
	require.NotContains(t, lines[0].Attrs, obslog.KeySuppressed)
	require.EqualValues(t, 299, lines[1].Attrs[obslog.KeySuppressed].Any(), "the repeat after 30 s counts what it suppressed so far")

	listen.Info("listen: reconnected")
	lines = out.Take()
	require.Equal(t, map[slog.Level]int{slog.LevelInfo: 1}, count(lines))
	require.Equal(t, "listen: reconnected", lines[0].Msg)
	require.EqualValues(t, 399, lines[0].Attrs[obslog.KeySuppressed].Any())

	clk.advance(time.Hour) // the quiet timer was stopped
	require.Empty(t, out.Take())

	// The next failure starts a new burst.
	listen.Warn("listen: listener connection lost")
	require.Len(t, out.Take(), 1)
}

// A burst that ends in silence gets one INFO "recovered" line once the
// component has logged nothing for Quiet, and only if something was
// suppressed; each failure restarts the quiet period.
func TestOutageEndedByQuiet(t *testing.T) {
	t.Parallel()
	log, out, clk := newLogger()
	queue := log.With(obslog.KeyComponent, "queue")

	queue.Warn("river: fetch failed")
	for range 5 {
		clk.advance(quiet - time.Second) // each failure restarts the quiet period
		queue.Warn("river: fetch failed")
	}
	require.Len(t, out.Take(), 1)
	clk.advance(quiet - time.Second)
	require.Empty(t, out.Take(), "quiet not reached")
	clk.advance(time.Second)
	lines := out.Take()
	require.Len(t, lines, 1)
	require.Equal(t, slog.LevelInfo, lines[0].Level)
	require.Equal(t, "pgcoord: component recovered", lines[0].Msg)
	require.EqualValues(t, 5, lines[0].Attrs[obslog.KeySuppressed].Any())
	require.Equal(t, "queue", lines[0].Attrs[obslog.KeyComponent].Any())
	require.Equal(t, "main", lines[0].Attrs[obslog.KeyApp].Any())

	// A single WARN, then quiet: nothing was suppressed, nothing to close.
	queue.Warn("river: fetch failed")
	clk.advance(quiet)
	require.Equal(t, map[slog.Level]int{slog.LevelWarn: 1}, count(out.Take()))
}

// Components have their own bursts: one's INFO ends only its own, and
// Flush closes the others (with their own attributes). DEBUG always passes.
func TestBurstsPerComponent(t *testing.T) {
	t.Parallel()
	log, out, clk := newLogger()
	listen := log.With(obslog.KeyComponent, "listen")
	locks := log.With(obslog.KeyComponent, "advisorylock")
	for range 3 {
		listen.Warn("listen: reconnect failed")
		locks.Warn("advisorylock: liveness session lost")
		locks.Debug("advisorylock: retrying")
		clk.advance(time.Second)
	}
	lines := out.Take()
	require.Equal(t, map[slog.Level]int{slog.LevelWarn: 2, slog.LevelDebug: 3}, count(lines))

	listen.Info("listen: reconnected")
	lines = out.Take()
	require.Len(t, lines, 1)
	require.EqualValues(t, 2, lines[0].Attrs[obslog.KeySuppressed].Any())
	locks.Warn("advisorylock: liveness session lost")
	require.Empty(t, out.Take(), "the lock burst goes on")

	obslog.Flush(log.Handler())
	lines = out.Take()
	require.Len(t, lines, 1)
	require.Equal(t, "advisorylock", lines[0].Attrs[obslog.KeyComponent].Any())
	require.EqualValues(t, 3, lines[0].Attrs[obslog.KeySuppressed].Any())
	clk.advance(time.Hour) // Flush stopped the timers
	require.Empty(t, out.Take())
}

// Every line carries app, instance_id and component once: a record's own
// attribute replaces the With attribute of the same key.
func TestAttributesOnce(t *testing.T) {
	t.Parallel()
	log, out, _ := newLogger()
	log.With(obslog.KeyComponent, "listen").Info("listen: started", slog.String(obslog.KeyApp, "main"), slog.Int("subscriptions", 2))
	lines := out.Take()
	require.Len(t, lines, 1)
	require.Equal(t, []string{obslog.KeyInstanceID, obslog.KeyComponent, obslog.KeyApp, "subscriptions"}, lines[0].Keys)
}
