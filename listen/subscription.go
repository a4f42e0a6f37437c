package listen

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
)

// SubscribeOpts are per-subscription options. A nil *SubscribeOpts means the
// defaults.
type SubscribeOpts struct {
	// Debounce, when positive, delays each call by Debounce after the last
	// message with the same payload (trailing edge, per subscription and
	// payload): a burst of identical messages calls the handler once, with
	// the last of them; different payloads each get their call.
	Debounce time.Duration

	// BufferSize is the number of messages buffered for this subscription
	// while its handler is busy. Messages beyond it are not lost: they are
	// counted, logged, and read back from the log once the handler catches
	// up. Defaults to Config.BufferSize.
	BufferSize int

	// OnResync, if set, is called on the subscription's own goroutine,
	// ordered with its messages, whenever messages may have been missed or
	// may arrive late: after the listener reconnects (before the messages
	// recovered by catch-up) and after the buffer overflowed (before the
	// recovered messages). A near-cache flushes itself here.
	OnResync func(ctx context.Context)
}

// item is one entry of a subscription's queue: a message or a resync mark.
type item struct {
	msg    Message
	resync bool
}

// Subscription is a handle on one subscribed handler. Its handler runs on a
// goroutine of its own, one call at a time, in delivery order.
type Subscription struct {
	ps       *PubSub
	channel  string
	handler  Handler
	debounce time.Duration
	onResync func(ctx context.Context)
	capacity int
	attrs    metric.MeasurementOption // the channel's attribute set (telemetry.go)
	span     spanStart                // the consumer span's name and options (telemetry.go)

	mu      sync.Mutex // guards queue, nmsgs, dropped, stopped
	queue   []item
	nmsgs   int     // messages (not resync marks) in queue
	dropped []int64 // ids of overflowed messages, in delivery order
	stopped bool

	gid      atomic.Uint64 // the goroutine's id (see goroutineID)
	wake     chan struct{} // capacity 1: something was queued
	stop     chan struct{} // closed by halt
	done     chan struct{} // closed when the goroutine ends
	haltOnce sync.Once
}

// Subscribe registers h for messages on channel and returns its handle. The
// subscription is live when Subscribe returns: a message published after
// that is delivered to it (once this PubSub is started). Subscriptions made
// before Start take effect at Start. Subscribing the same function twice
// gives two independent subscriptions, each called once per message.
func (ps *PubSub) Subscribe(ctx context.Context, channel string, h Handler, opts *SubscribeOpts) (*Subscription, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := validateChannel(channel); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, fmt.Errorf("listen: subscribe %q: nil handler", channel)
	}
	var o SubscribeOpts
	if opts != nil {
		o = *opts
	}
	if o.BufferSize < 0 || o.Debounce < 0 {
		return nil, fmt.Errorf("listen: subscribe %q: negative BufferSize or Debounce", channel)
	}
	orDefault(&o.BufferSize, ps.cfg.BufferSize)
	s := &Subscription{
		ps:       ps,
		channel:  channel,
		handler:  h,
		debounce: o.Debounce,
		onResync: o.OnResync,
		capacity: o.BufferSize,
		attrs:    channelAttrs(channel),
		span:     newSpanStart(channel),
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.state == stateClosed {
		return nil, ErrClosed
	}
	set := ps.subs[channel]
	if set == nil {
		set = map[*Subscription]struct{}{}
		ps.subs[channel] = set
	}
	set[s] = struct{}{}
	ps.running[s] = struct{}{}
	go s.run()
	return s, nil
}

// Channel returns the subscribed channel.
func (s *Subscription) Channel() string { return s.channel }

// Unsubscribe removes the subscription. No handler call starts after it
// returns (one that is running finishes); pending debounced calls are
// dropped. It is safe to call more than once, and from the handler itself.
func (s *Subscription) Unsubscribe() {
	ps := s.ps
	ps.mu.Lock()
	if set := ps.subs[s.channel]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(ps.subs, s.channel)
		}
	}
	ps.mu.Unlock()
	s.halt()
}

// halt stops the goroutine without waiting for it.
func (s *Subscription) halt() {
	s.haltOnce.Do(func() {
		s.mu.Lock()
		s.stopped = true
		s.queue, s.dropped, s.nmsgs = nil, nil, 0
		s.mu.Unlock()
		close(s.stop)
	})
}

// wait waits until the subscription's goroutine has ended.
func (s *Subscription) wait(ctx context.Context) error {
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Subscription) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// enqueue queues msg without blocking. When the buffer is full the message
// is dropped and its id kept; it is read back from the log later. Once a
// message is dropped every later one is too, until recovery, so delivery
// order is kept.
func (s *Subscription) enqueue(msg Message) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	if len(s.dropped) > 0 || s.nmsgs >= s.capacity {
		if len(s.dropped) == 0 {
			s.ps.logger.Warn("listen: subscription buffer full; recovering later messages from the log",
				slog.String("channel", s.channel), slog.Int("buffer_size", s.capacity))
		}
		s.dropped = append(s.dropped, msg.ID)
		s.ps.count(&s.ps.stats.dropped, 1)
	} else {
		s.queue = append(s.queue, item{msg: msg})
		s.nmsgs++
	}
	s.mu.Unlock()
	s.signal()
}

// enqueueResync queues a resync mark (coalesced with a pending one).
func (s *Subscription) enqueueResync() {
	if s.onResync == nil {
		return
	}
	s.mu.Lock()
	if s.stopped || (len(s.queue) > 0 && s.queue[len(s.queue)-1].resync) {
		s.mu.Unlock()
		return
	}
	s.queue = append(s.queue, item{resync: true})
	s.mu.Unlock()
	s.signal()
}

// next takes the next item, or the dropped ids once the queue is empty.
func (s *Subscription) next() (it item, dropped []int64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return item{}, nil, false
	}
	if len(s.queue) > 0 {
		it = s.queue[0]
		s.queue[0] = item{}
		s.queue = s.queue[1:]
		if !it.resync {
			s.nmsgs--
		}
		return it, nil, true
	}
	if len(s.dropped) > 0 {
		dropped, s.dropped = s.dropped, nil
		return item{}, dropped, true
	}
	return item{}, nil, false
}

func (s *Subscription) isStopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

// pendingCall is a debounced call waiting for its quiet period.
type pendingCall struct {
	msg Message
	due time.Time
}

// run is the subscription's goroutine: it calls the handler for queued
// messages, fires debounced calls when due, and recovers dropped messages.
func (s *Subscription) run() {
	s.gid.Store(goroutineID())
	defer func() {
		s.ps.mu.Lock()
		delete(s.ps.running, s)
		s.ps.mu.Unlock()
		close(s.done)
	}()
	var (
		pending map[string]*pendingCall
		timer   *time.Timer
		timerC  <-chan time.Time
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	reschedule := func() {
		if timer != nil {
			timer.Stop()
			timer, timerC = nil, nil
		}
		var first time.Time
		for _, p := range pending {
			if first.IsZero() || p.due.Before(first) {
				first = p.due
			}
		}
		if !first.IsZero() {
			timer = time.NewTimer(time.Until(first))
			timerC = timer.C
		}
	}
	deliver := func(msg Message) {
		if s.debounce <= 0 {
			s.call(msg)
			return
		}
		if pending == nil {
			pending = map[string]*pendingCall{}
		}
		pending[string(msg.Payload)] = &pendingCall{msg: msg, due: time.Now().Add(s.debounce)}
		reschedule()
	}
	for {
		for {
			it, dropped, ok := s.next()
			if !ok {
				break
			}
			switch {
			case dropped != nil:
				s.recoverDropped(dropped, deliver)
			case it.resync:
				s.resync()
			default:
				deliver(it.msg)
			}
		}
		select {
		case <-s.stop:
			return
		case <-s.wake:
		case <-timerC:
			timer, timerC = nil, nil
			now := time.Now()
			var due []*pendingCall
			for k, p := range pending {
				if !p.due.After(now) {
					due = append(due, p)
					delete(pending, k)
				}
			}
			slices.SortFunc(due, func(a, b *pendingCall) int { return a.due.Compare(b.due) })
			for _, p := range due {
				s.call(p.msg)
			}
			reschedule()
		}
	}
}

// call runs the handler once, logging and counting an error or a panic.
func (s *Subscription) call(msg Message) {
	if s.isStopped() {
		return
	}
	ps := s.ps
	defer func() {
		if p := recover(); p != nil {
			ps.count(&ps.stats.handlerErrors, 1)
			ps.logger.Error("listen: handler panicked", slog.String("channel", s.channel),
				slog.Int64("message_id", msg.ID), slog.Int("payload_bytes", len(msg.Payload)), slog.Any("panic", p))
		}
	}()
	begin := ps.tel.begin()
	ctx, span := ps.tel.process(s.handlerCtx(), s, msg)
	defer span.End() // a panic too
	err := s.handler(ctx, msg)
	failed(span, err)
	ps.tel.called(s, msg, begin)
	ps.count(&ps.stats.delivered, 1)
	if err != nil {
		ps.count(&ps.stats.handlerErrors, 1)
		ps.logger.Error("listen: handler failed", slog.String("channel", s.channel),
			slog.Int64("message_id", msg.ID), slog.Int("payload_bytes", len(msg.Payload)), slog.Any("error", err))
	}
}

func (s *Subscription) resync() {
	if s.onResync == nil || s.isStopped() {
		return
	}
	defer func() {
		if p := recover(); p != nil {
			s.ps.logger.Error("listen: OnResync panicked", slog.String("channel", s.channel), slog.Any("panic", p))
		}
	}()
	s.onResync(s.handlerCtx())
	s.ps.watch.Notify()
}

// recoverDropped reads dropped messages back from the log and delivers them, after
// OnResync. While the database is unreachable it retries until stopped.
func (s *Subscription) recoverDropped(ids []int64, deliver func(Message)) {
	ps := s.ps
	s.resync()
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), fetchChunk)]
		ctx, cancel := context.WithTimeout(ps.ctx, queryTimeout)
		envs, err := fetchMessages(ctx, ps.pool, ps, chunk)
		cancel()
		if err != nil {
			ps.logger.Warn("listen: recovering dropped messages failed; retrying", slog.String("channel", s.channel), slog.Int("messages", len(ids)), slog.Any("error", err))
			t := time.NewTimer(time.Second)
			select {
			case <-s.stop:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		ids = ids[len(chunk):]
		// fetch orders by (xid, id); restore delivery order.
		pos := make(map[int64]int, len(chunk))
		for i, id := range chunk {
			pos[id] = i
		}
		slices.SortFunc(envs, func(a, b envelope) int { return pos[a.msg.ID] - pos[b.msg.ID] })
		if lost := len(chunk) - len(envs); lost > 0 {
			ps.count(&ps.stats.lost, int64(lost))
			ps.logger.Error("listen: dropped messages were pruned from the log before recovery", slog.String("channel", s.channel), slog.Int("messages", lost))
		}
		for _, e := range envs {
			if s.isStopped() {
				return
			}
			ps.count(&ps.stats.recovered, 1)
			deliver(e.msg)
		}
	}
}

// handlerKey marks the context of a handler (and OnResync) call with its
// subscription, so that Close called from it, with that context or one
// derived from it, on any goroutine, does not wait for the handler itself.
type handlerKey struct{}

func (s *Subscription) handlerCtx() context.Context {
	return context.WithValue(s.ps.ctx, handlerKey{}, s)
}

// calledFrom reports whether a Close with ctx comes from s's handler: on s's
// goroutine, or with a context derived from its handler's.
func (s *Subscription) calledFrom(ctx context.Context, gid uint64) bool {
	if h, _ := ctx.Value(handlerKey{}).(*Subscription); h == s {
		return true
	}
	return gid != 0 && s.gid.Load() == gid
}

// goroutineID returns the current goroutine's id, parsed from the first line
// of its stack trace ("goroutine 42 [running]:"), or 0. Only Close uses it,
// to know that it runs inside a handler.
func goroutineID() uint64 {
	var buf [64]byte
	n := runtime.Stack(buf[:], false)
	f := strings.Fields(string(buf[:n]))
	if len(f) < 2 || f[0] != "goroutine" {
		return 0
	}
	id, _ := strconv.ParseUint(f[1], 10, 64)
	return id
}
