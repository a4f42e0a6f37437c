package app

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/listen"
)

// Plugin is a unit of application behaviour. Its Name must be unique within
// the app and non-empty; it names the plugin's sync-message channel. A plugin
// opts into lifecycle hooks by implementing the optional interfaces below.
type Plugin interface {
	Name() string
}

// BeforeLoader is called first at Start, for every plugin, before any Load.
type BeforeLoader interface {
	BeforeLoad(ctx context.Context, a *App) error
}

// Loader is called at Start after every BeforeLoad, before the event queue
// starts: subscribe queue channels, pub/sub channels and create caches here.
type Loader interface {
	Load(ctx context.Context, a *App) error
}

// AfterStarter is called once the app is fully started.
type AfterStarter interface {
	AfterStart(ctx context.Context, a *App) error
}

// BeforeStopper is called first at Stop, in reverse plugin order, while every
// component is still running.
type BeforeStopper interface {
	BeforeStop(ctx context.Context, a *App) error
}

// SyncMessageHandler receives the sync messages the same plugin sent on
// another instance of the app (NocoBase's handleSyncMessage). It never runs
// after the app stopped. Sync messages are debounced (Config.Sync.Debounce):
// identical payloads sent within the window arrive once.
type SyncMessageHandler interface {
	HandleSyncMessage(ctx context.Context, msg listen.Message) error
}

// ErrPluginNotBound is returned by PluginBase's methods when the plugin was
// not passed to app.New (so it has no app to send through).
var ErrPluginNotBound = errors.New("app: plugin is not part of an App (pass it in Config.Plugins)")

// PluginBase is embedded in a plugin struct to give it SendSyncMessage and
// SendSyncMessageTx. New binds it to the app and the plugin's name.
type PluginBase struct {
	mu   sync.Mutex // guards app and name
	app  *App
	name string
}

// bind is called by New; it is unexported so only this package can bind.
func (b *PluginBase) bind(a *App, name string) {
	b.mu.Lock()
	b.app, b.name = a, name
	b.mu.Unlock()
}

type binder interface{ bind(*App, string) }

// App returns the app the plugin belongs to, nil before New.
func (b *PluginBase) App() *App {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.app
}

func (b *PluginBase) target() (*App, string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.app == nil {
		return nil, "", ErrPluginNotBound
	}
	return b.app, b.name, nil
}

// SendSyncMessage sends msg to the same plugin on every other instance of the
// app (not to this one). Unlike NocoBase, errors are returned, not swallowed.
func (b *PluginBase) SendSyncMessage(ctx context.Context, msg any) error {
	a, name, err := b.target()
	if err != nil {
		return err
	}
	if err := a.sync.Publish(ctx, pluginChannel(name), msg, nil); err != nil {
		return fmt.Errorf("plugin %q: send sync message: %w", name, err)
	}
	return nil
}

// SendSyncMessageTx sends msg as part of tx: the other instances receive it if
// and only if tx commits, and only after the commit. On rollback nothing is sent.
func (b *PluginBase) SendSyncMessageTx(ctx context.Context, tx pgx.Tx, msg any) error {
	a, name, err := b.target()
	if err != nil {
		return err
	}
	if err := a.sync.PublishTx(ctx, tx, pluginChannel(name), msg, nil); err != nil {
		return fmt.Errorf("plugin %q: send sync message: %w", name, err)
	}
	return nil
}

// pluginChannel is the sync channel of a plugin.
func pluginChannel(name string) string { return "plugin:" + name }
