// Package obslog is the slog.Handler behind an app's logger: it gives every
// line the app's attributes (app, instance_id, component) exactly once, and
// turns a burst of warnings and errors from one component (a database
// outage: a failed poll, reconnect or election every few hundred
// milliseconds, from pgcoord's own code and from River's) into one line when
// it starts, a rate-limited repeat, and one INFO line when it ends.
//
// Rules, per component (the value of the "component" attribute):
//   - a WARN or ERROR record while the component is quiet is written as it
//     is, and starts a burst;
//   - during a burst, further WARN and ERROR records are counted, not
//     written, except one every [Config.Repeat], which carries
//     suppressed=<count so far>;
//   - a burst ends at the component's next INFO record (e.g. "reconnected"),
//     which is written with suppressed=<count>, or, when the component logs
//     nothing for [Config.Quiet], with one INFO line "pgcoord: component
//     recovered" (only when something was suppressed).
//
// DEBUG records always pass. Attributes given by With replace earlier ones
// of the same key, and a record's own attribute replaces a With attribute of
// the same key, so a component that adds app itself does not print it twice.
package obslog

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Defaults of Config.
const (
	DefaultRepeat = 30 * time.Second
	DefaultQuiet  = 5 * time.Second
)

// KeyComponent, KeyApp and KeyInstanceID are the attributes every line carries.
const (
	KeyComponent  = "component"
	KeyApp        = "app"
	KeyInstanceID = "instance_id"
	KeySuppressed = "suppressed"
)

// Config configures New.
type Config struct {
	// Repeat is the least time between two written lines of one burst.
	// Defaults to DefaultRepeat.
	Repeat time.Duration
	// Quiet ends a burst when the component has logged nothing for this
	// long. Defaults to DefaultQuiet.
	Quiet time.Duration
	// Now and AfterFunc are the clock: Repeat and Quiet are measured with
	// them, and the closing line of a quiet burst is written from an
	// AfterFunc callback. Default to time.Now and time.AfterFunc; tests
	// inject a manual clock.
	Now       func() time.Time
	AfterFunc func(d time.Duration, f func()) Timer
}

// Timer is what Config.AfterFunc returns; *time.Timer is one.
type Timer interface {
	// Stop prevents the callback from running, if it has not yet.
	Stop() bool
}

// New returns a handler writing to inner, with attrs on every line.
func New(inner slog.Handler, cfg Config, attrs ...slog.Attr) slog.Handler {
	if cfg.Repeat <= 0 {
		cfg.Repeat = DefaultRepeat
	}
	if cfg.Quiet <= 0 {
		cfg.Quiet = DefaultQuiet
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.AfterFunc == nil {
		cfg.AfterFunc = func(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
	}
	h := &handler{inner: inner, st: &state{cfg: cfg, bursts: map[string]*burst{}}}
	return h.with(attrs)
}

// state is shared by every handler derived from one New.
type state struct {
	cfg    Config
	mu     sync.Mutex // guards bursts and every burst
	bursts map[string]*burst
}

// burst is one component's current burst.
type burst struct {
	lastWritten time.Time
	suppressed  int
	// gen grows with every record, so a quiet timer set for an older one
	// does nothing.
	gen   uint64
	timer Timer
	// end writes the closing line (with the handler of the record that
	// started the burst, so it carries the same attributes).
	h *handler
}

// handler keeps its With attributes itself (so a record's own attribute
// can replace them) until a group opens, when they move into inner.
type handler struct {
	inner slog.Handler
	attrs []slog.Attr
	comp  string // the component attribute's value
	st    *state
}

func (h *handler) with(attrs []slog.Attr) *handler {
	out := &handler{inner: h.inner, st: h.st, attrs: slices.Clone(h.attrs), comp: h.comp}
	for _, a := range attrs {
		if a.Key == KeyComponent {
			out.comp = a.Value.String()
		}
		if i := slices.IndexFunc(out.attrs, func(b slog.Attr) bool { return b.Key == a.Key }); i >= 0 {
			out.attrs[i] = a
		} else {
			out.attrs = append(out.attrs, a)
		}
	}
	return out
}

// Enabled implements slog.Handler.
func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

// WithAttrs implements slog.Handler.
func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler { return h.with(attrs) }

// WithGroup implements slog.Handler.
func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &handler{inner: h.inner.WithAttrs(h.attrs).WithGroup(name), st: h.st, comp: h.comp}
}

// Handle implements slog.Handler.
func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelInfo {
		return h.write(ctx, r)
	}
	comp := h.comp
	st := h.st
	now := st.cfg.Now()
	st.mu.Lock()
	b := st.bursts[comp]
	switch {
	case r.Level >= slog.LevelWarn && b == nil:
		b = &burst{lastWritten: now, h: h}
		st.bursts[comp] = b
		h.arm(comp, b)
		st.mu.Unlock()
		return h.write(ctx, r)
	case r.Level >= slog.LevelWarn:
		h.arm(comp, b)
		if now.Sub(b.lastWritten) < st.cfg.Repeat {
			b.suppressed++
			st.mu.Unlock()
			return nil
		}
		b.lastWritten = now
		n := b.suppressed
		st.mu.Unlock()
		r.AddAttrs(slog.Int(KeySuppressed, n))
		return h.write(ctx, r)
	case b != nil: // INFO during a burst: the component says it recovered
		delete(st.bursts, comp)
		b.timer.Stop()
		n := b.suppressed
		st.mu.Unlock()
		if n > 0 {
			r.AddAttrs(slog.Int(KeySuppressed, n))
		}
		return h.write(ctx, r)
	default:
		st.mu.Unlock()
		return h.write(ctx, r)
	}
}

// arm (re)starts b's quiet timer. st.mu is held.
func (h *handler) arm(comp string, b *burst) {
	b.gen++
	gen := b.gen
	if b.timer != nil {
		b.timer.Stop()
	}
	st := h.st
	b.timer = st.cfg.AfterFunc(st.cfg.Quiet, func() {
		st.mu.Lock()
		if st.bursts[comp] != b || b.gen != gen {
			st.mu.Unlock()
			return
		}
		delete(st.bursts, comp)
		n := b.suppressed
		st.mu.Unlock()
		if n == 0 {
			return
		}
		r := slog.NewRecord(st.cfg.Now(), slog.LevelInfo, "pgcoord: component recovered", 0)
		r.AddAttrs(slog.Int(KeySuppressed, n))
		_ = b.h.write(context.Background(), r)
	})
}

// Flush ends every burst of every handler derived from the same New as h
// (writing their closing lines now) and stops their timers. An App calls
// it at the end of Stop. It does nothing for another slog.Handler.
func Flush(h slog.Handler) {
	oh, ok := h.(*handler)
	if !ok {
		return
	}
	st := oh.st
	st.mu.Lock()
	ended := st.bursts
	st.bursts = map[string]*burst{}
	for _, b := range ended {
		b.timer.Stop()
	}
	st.mu.Unlock()
	for _, b := range ended {
		if b.suppressed > 0 {
			r := slog.NewRecord(st.cfg.Now(), slog.LevelInfo, "pgcoord: component recovered", 0)
			r.AddAttrs(slog.Int(KeySuppressed, b.suppressed))
			_ = b.h.write(context.Background(), r)
		}
	}
}

// write passes r to inner with the With attributes r does not set itself.
func (h *handler) write(ctx context.Context, r slog.Record) error {
	if !h.inner.Enabled(ctx, r.Level) {
		return nil
	}
	own := map[string]bool{}
	r.Attrs(func(a slog.Attr) bool { own[a.Key] = true; return true })
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	for _, a := range h.attrs {
		if !own[a.Key] {
			out.AddAttrs(a)
		}
	}
	r.Attrs(func(a slog.Attr) bool { out.AddAttrs(a); return true })
	return h.inner.Handle(ctx, out)
}
