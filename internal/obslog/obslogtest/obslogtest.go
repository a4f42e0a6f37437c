// Package obslogtest is a capturing slog.Handler for tests of pgcoord's
// logging: it keeps every record with its attributes so a test can count
// lines and read their attributes.
package obslogtest

import (
	"context"
	"log/slog"
	"sync"
)

// Line is one captured record.
type Line struct {
	Level slog.Level
	Msg   string
	// Attrs are the record's attributes by key; Keys their keys in order,
	// repeats included.
	Attrs map[string]slog.Value
	Keys  []string
}

// Capture is a slog.Handler that keeps every record. It is meant to sit
// under obslog, which keeps With attributes itself: WithAttrs panics, and
// groups are flattened.
type Capture struct {
	mu    sync.Mutex
	lines []Line
}

// Enabled implements slog.Handler: every level is.
func (c *Capture) Enabled(context.Context, slog.Level) bool { return true }

// WithAttrs implements slog.Handler; obslog never calls it.
func (c *Capture) WithAttrs([]slog.Attr) slog.Handler {
	panic("obslogtest: obslog keeps With attributes itself")
}

// WithGroup implements slog.Handler: attributes of a group are captured
// under their own keys.
func (c *Capture) WithGroup(string) slog.Handler { return c }

// Handle implements slog.Handler.
func (c *Capture) Handle(_ context.Context, r slog.Record) error {
	l := Line{Level: r.Level, Msg: r.Message, Attrs: map[string]slog.Value{}}
	r.Attrs(func(a slog.Attr) bool {
		l.Attrs[a.Key] = a.Value.Resolve()
		l.Keys = append(l.Keys, a.Key)
		return true
	})
	c.mu.Lock()
	c.lines = append(c.lines, l)
	c.mu.Unlock()
	return nil
}

// All returns every line captured.
func (c *Capture) All() []Line {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Line(nil), c.lines...)
}

// Take returns the lines captured since the last Take and forgets them.
func (c *Capture) Take() []Line {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.lines
	c.lines = nil
	return out
}
