package listen

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
)

const waitFor = 20 * time.Second
const tick = 5 * time.Millisecond

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// instance creates a PubSub over a new pool with application_name name (so
// TerminateBackends(name) kills its sessions), instance id name, app "app"
// unless cfg says otherwise. It is closed when the test ends.
func instance(t *testing.T, db *pgtest.DB, name string, cfg *Config) *PubSub {
	t.Helper()
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.InstanceID == "" {
		c.InstanceID = name
	}
	return psWith(t, db.NewPool(t, &pgtest.PoolOptions{AppName: name, MaxConns: 6}), c)
}

func started(t *testing.T, db *pgtest.DB, name string, cfg *Config) *PubSub {
	t.Helper()
	ps := instance(t, db, name, cfg)
	require.NoError(t, ps.Start(context.Background()))
	return ps
}

// inbox records delivered messages.
type inbox struct {
	mu      sync.Mutex
	msgs    []Message
	arrived pgtest.Signal // notified after each message
}

func (b *inbox) handle(_ context.Context, m Message) error {
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
	b.arrived.Notify()
	return nil
}

// waitUntil waits, without polling, until cond holds for the messages
// received so far.
func (b *inbox) waitUntil(t *testing.T, cond func([]Message) bool, msgAndArgs ...any) {
	t.Helper()
	b.arrived.WaitUntil(t, waitFor, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return cond(b.msgs)
	}, append([]any{"inbox: condition not met"}, msgAndArgs...)...)
}

func (b *inbox) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.msgs)
}

func (b *inbox) all() []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Message(nil), b.msgs...)
}

func (b *inbox) payloads() []string {
	var out []string
	for _, m := range b.all() {
		out = append(out, string(m.Payload))
	}
	return out
}

// nonBarrier returns the payloads that are not barrier markers.
func (b *inbox) nonBarrier() []string {
	var out []string
	for _, p := range b.payloads() {
		if !strings.HasPrefix(p, `"barrier-`) {
			out = append(out, p)
		}
	}
	return out
}

// waitLen waits until at least n messages arrived and returns them.
func (b *inbox) waitLen(t *testing.T, n int) []Message {
	t.Helper()
	b.waitUntil(t, func(ms []Message) bool { return len(ms) >= n }, "want %d messages", n)
	return b.all()
}

func (b *inbox) waitPayload(t *testing.T, payload string) {
	t.Helper()
	b.waitUntil(t, func(ms []Message) bool {
		return slices.ContainsFunc(ms, func(m Message) bool { return string(m.Payload) == payload })
	}, "want payload %s", payload)
}

func subscribe(t *testing.T, ps *PubSub, channel string, opts *SubscribeOpts) *inbox {
	t.Helper()
	b := &inbox{}
	_, err := ps.Subscribe(context.Background(), channel, b.handle, opts)
	require.NoError(t, err)
	return b
}

// publisher is what PubSub and SyncMessages share: Publish.
type publisher interface {
	Publish(ctx context.Context, channel string, payload any, opts *PublishOpts) error
}

// barrier publishes a marker from `from` (a PubSub or SyncMessages) and
// waits until `to` received it on channel. Notifications arrive in commit
// order, so anything `to` would get from messages committed earlier has
// been dispatched by then.
func barrier(t *testing.T, from publisher, to *inbox, channel string) {
	t.Helper()
	marker := `"barrier-` + randomID() + `"`
	require.NoError(t, from.Publish(context.Background(), channel, []byte(marker), nil))
	to.waitPayload(t, marker)
}

// waitState waits, without polling, until cond holds; cond reads what ps
// signals a change of (watch.go): Healthy, Stats, the ledger after a
// catch-up, or what ps's handlers and OnResync callbacks recorded.
func waitState(t *testing.T, ps *PubSub, within time.Duration, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	pgtest.WaitUntil(t, within, ps.watch.Next, cond, msgAndArgs...)
}

// readLog plays l's listener once: a whole catch-up on conn, every page.
func readLog(t *testing.T, l *listener, conn *pgx.Conn) {
	t.Helper()
	c := l.newCatchUp()
	for {
		done, err := l.page(context.Background(), conn, c, false)
		require.NoError(t, err)
		if done {
			return
		}
	}
}

// setup marks t parallel and gives it a background context and a database
// of its own.
func setup(t *testing.T) (context.Context, *pgtest.DB) {
	t.Helper()
	t.Parallel()
	return context.Background(), pgtest.NewDB(t)
}

// setupPair is setup plus two started instances with the default config,
// inst-a and inst-b.
func setupPair(t *testing.T) (context.Context, *pgtest.DB, *PubSub, *PubSub) {
	t.Helper()
	ctx, db := setup(t)
	return ctx, db, started(t, db, "inst-a", nil), started(t, db, "inst-b", nil)
}
