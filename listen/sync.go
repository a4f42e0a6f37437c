package listen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultSyncDebounce is the debounce of sync subscriptions (NocoBase's 1 s).
const DefaultSyncDebounce = time.Second

// SyncChannelPrefix prefixes the logical channel of every sync message.
const SyncChannelPrefix = "sync."

// SyncConfig configures [SyncMessages]. A nil *SyncConfig means the defaults.
type SyncConfig struct {
	// Debounce is the debounce of every sync subscription (see
	// [SubscribeOpts.Debounce]). Negative disables it. Defaults to
	// DefaultSyncDebounce.
	Debounce time.Duration
	// Logger defaults to the PubSub's logger.
	Logger *slog.Logger
}

// SyncMessages carries "state changed, reload your copy" signals between the
// instances of an app (NocoBase's SyncMessageManager) on top of a [PubSub]:
// channel c travels as logical channel "sync.c", publishing skips the
// publisher by default, and every subscription is debounced. Unlike
// NocoBase's, sync messages are logged, so an instance whose listener
// reconnects still gets them; and after Close no sync handler runs.
type SyncMessages struct {
	ps       *PubSub
	debounce time.Duration
	logger   *slog.Logger

	// ctx ends at Close: running sync handlers get a cancelled context
	// then, as with PubSub.Close, so Close never waits on a handler that
	// waits for its context.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex // guards closed and subs
	closed bool
	subs   map[*Subscription]struct{}
}

// NewSyncMessages returns sync messages on ps. Closing ps also stops them.
func NewSyncMessages(ps *PubSub, cfg *SyncConfig) (*SyncMessages, error) {
	if ps == nil {
		return nil, errors.New("listen: nil PubSub")
	}
	var c SyncConfig
	if cfg != nil {
		c = *cfg
	}
	orDefault(&c.Debounce, DefaultSyncDebounce)
	if c.Debounce < 0 {
		c.Debounce = 0
	}
	if c.Logger == nil {
		c.Logger = ps.logger
	}
	sm := &SyncMessages{ps: ps, debounce: c.Debounce, logger: c.Logger, subs: map[*Subscription]struct{}{}}
	sm.ctx, sm.cancel = context.WithCancel(context.Background())
	return sm, nil
}

// Subscribe registers h for sync messages on channel, debounced by
// SyncConfig.Debounce. The handler sees msg.Channel without the "sync."
// prefix. After Close it is never called.
func (sm *SyncMessages) Subscribe(ctx context.Context, channel string, h Handler) (*Subscription, error) {
	if err := validateChannel(channel); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, fmt.Errorf("listen: sync subscribe %q: nil handler", channel)
	}
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if sm.closed {
		return nil, ErrClosed
	}
	guarded := func(ctx context.Context, msg Message) error {
		if sm.isClosed() {
			return nil
		}
		msg.Channel = channel
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(sm.ctx, cancel)()
		return h(ctx, msg)
	}
	s, err := sm.ps.Subscribe(ctx, SyncChannelPrefix+channel, guarded, &SubscribeOpts{Debounce: sm.debounce})
	if err != nil {
		return nil, err
	}
	sm.subs[s] = struct{}{}
	return s, nil
}

func (sm *SyncMessages) isClosed() bool {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return sm.closed
}

// Publish sends a sync message on channel. A nil opts skips the publisher
// (the other instances reload; this one already has the new state).
func (sm *SyncMessages) Publish(ctx context.Context, channel string, payload any, opts *PublishOpts) error {
	if sm.isClosed() {
		return ErrClosed
	}
	if err := validateChannel(channel); err != nil {
		return err
	}
	return sm.ps.Publish(ctx, SyncChannelPrefix+channel, payload, opts)
}

// PublishTx sends a sync message in the caller's transaction: delivered if
// and only if tx commits, after the commit (see [PubSub.PublishTx]). Unlike
// NocoBase it never waits for the commit, so it cannot time out.
func (sm *SyncMessages) PublishTx(ctx context.Context, tx pgx.Tx, channel string, payload any, opts *PublishOpts) error {
	if sm.isClosed() {
		return ErrClosed
	}
	if err := validateChannel(channel); err != nil {
		return err
	}
	return sm.ps.PublishTx(ctx, tx, SyncChannelPrefix+channel, payload, opts)
}

// Close unsubscribes every sync subscription, drops pending debounced calls,
// cancels the context of running sync handlers and waits (bounded by ctx)
// for them. Close and [PubSub.Close] may be called in either order. After it returns nil no
// sync handler runs, except the one Close was called from: like
// [PubSub.Close], Close may be called from a sync handler (on its goroutine,
// or with its context or one derived from it), and then returns without
// waiting for that handler. It does not close the PubSub. Safe to call
// twice.
func (sm *SyncMessages) Close(ctx context.Context) error {
	gid := goroutineID()
	sm.mu.Lock()
	if sm.closed {
		sm.mu.Unlock()
		return nil
	}
	sm.closed = true
	subs := sm.subs
	sm.subs = nil
	sm.mu.Unlock()
	sm.cancel()
	for s := range subs {
		s.Unsubscribe()
	}
	for s := range subs {
		if s.calledFrom(ctx, gid) {
			continue
		}
		if err := s.wait(ctx); err != nil {
			return fmt.Errorf("listen: sync close: %w", err)
		}
	}
	return nil
}
