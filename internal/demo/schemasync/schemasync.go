// Package schemasync is the second scenario of NocoBase's cluster plugin
// guide as a pgcoord plugin: every instance keeps the collections table in an
// in-memory map, and a change made on one instance is announced with a sync
// message sent in the same transaction as the change, so the other instances
// reload it from the database (NocoBase's plugin-data-source-main).
//
// The message is sent with [app.PluginBase.SendSyncMessageTx]: it is delivered
// if and only if the transaction commits, and only after the commit, so a
// receiving instance always reads the committed row. A rolled-back change is
// never announced. (NocoBase's syncMessageManager.publish with a transaction
// waits for afterCommit in the same way; a NocoBase instance whose Redis
// connection drops loses the message, a pgcoord instance catches up.)
package schemasync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/demo/demoschema"
	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/txhooks"
)

// PluginName is the plugin's name, and so its sync-message channel.
const PluginName = "data-source-main"

// Collection is a row of the collections table.
type Collection struct {
	Name   string   `json:"name"`
	Title  string   `json:"title"`
	Fields []string `json:"fields"`
}

// Message is the sync message the plugin sends (NocoBase's
// {type: "syncCollection", collectionName}).
type Message struct {
	Type           string `json:"type"`
	CollectionName string `json:"collectionName"`
}

// Reload describes one reload done because of a sync message.
type Reload struct {
	Collection string
	Sender     string // instance id of the instance that made the change
	Removed    bool   // the collection no longer exists
}

// Plugin keeps the collections in memory on each instance. Create it with New
// and pass it in app.Config.Plugins.
type Plugin struct {
	app.PluginBase

	// OnReload, when set before Start, is called after each reload caused by
	// another instance's message.
	OnReload func(Reload)

	schema string
	table  string

	mu          sync.RWMutex // guards collections
	collections map[string]Collection

	reloads atomic.Int64
}

// New returns the plugin. schema holds its table; "" means "public".
func New(schema string) (*Plugin, error) {
	schema, err := demoschema.Name("schemasync", schema)
	if err != nil {
		return nil, err
	}
	return &Plugin{
		schema: schema, table: pgx.Identifier{schema, "collections"}.Sanitize(),
		collections: map[string]Collection{},
	}, nil
}

// Name implements app.Plugin.
func (p *Plugin) Name() string { return PluginName }

// EnsureSchema creates the plugin's schema and collections table if needed,
// under an advisory transaction lock so instances starting at once do not race.
func EnsureSchema(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	return demoschema.EnsureNew(ctx, pool, schema, New, (*Plugin).ensureSchema)
}

func (p *Plugin) ensureSchema(ctx context.Context, pool *pgxpool.Pool) error {
	return demoschema.Ensure(ctx, pool, p.schema, PluginName, `
			CREATE TABLE IF NOT EXISTS `+p.table+` (
				name   text PRIMARY KEY,
				title  text NOT NULL DEFAULT '',
				fields text[] NOT NULL DEFAULT '{}'
			)`)
}

// Load creates the table if needed and loads every collection into memory.
func (p *Plugin) Load(ctx context.Context, a *app.App) error {
	if err := p.ensureSchema(ctx, a.DB()); err != nil {
		return fmt.Errorf("schemasync: create table: %w", err)
	}
	rows, err := a.DB().Query(ctx, `SELECT name, title, fields FROM `+p.table)
	if err != nil {
		return fmt.Errorf("schemasync: load collections: %w", err)
	}
	all, err := pgx.CollectRows(rows, scanCollection)
	if err != nil {
		return fmt.Errorf("schemasync: load collections: %w", err)
	}
	p.mu.Lock()
	for _, c := range all {
		p.collections[c.Name] = c
	}
	p.mu.Unlock()
	return nil
}

func scanCollection(row pgx.CollectableRow) (Collection, error) {
	var c Collection
	err := row.Scan(&c.Name, &c.Title, &c.Fields)
	return c, err
}

// Collection returns the in-memory copy of a collection.
func (p *Plugin) Collection(name string) (Collection, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	c, ok := p.collections[name]
	return c, ok
}

// Names returns the names of the collections in memory, sorted.
func (p *Plugin) Names() []string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return slices.Sorted(maps.Keys(p.collections))
}

// Reloads counts the reloads this instance did because of sync messages.
func (p *Plugin) Reloads() int64 { return p.reloads.Load() }

// SaveCollection creates or replaces c in its own transaction and announces
// it to the other instances; this instance's map is updated after the commit.
func (p *Plugin) SaveCollection(ctx context.Context, c Collection) error {
	a := p.App()
	if a == nil {
		return app.ErrPluginNotBound
	}
	return txhooks.Run(ctx, a.DB(), func(ctx context.Context, tx *txhooks.Tx) error {
		return p.SaveCollectionTx(ctx, tx, c)
	})
}

// SaveCollectionTx creates or replaces c inside tx and sends the sync
// message in tx. On commit the other instances reload c (and, with a
// *txhooks.Tx, this instance's map is updated by the after-commit hook; with
// a plain pgx.Tx call Refresh after committing). On rollback nothing changes
// anywhere and no message is sent.
func (p *Plugin) SaveCollectionTx(ctx context.Context, tx pgx.Tx, c Collection) error {
	if c.Name == "" {
		return errors.New("schemasync: empty collection name")
	}
	if c.Fields == nil {
		c.Fields = []string{}
	}
	if p.App() == nil {
		return app.ErrPluginNotBound
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO `+p.table+` (name, title, fields) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET title = EXCLUDED.title, fields = EXCLUDED.fields`,
		c.Name, c.Title, c.Fields); err != nil {
		return fmt.Errorf("schemasync: save collection %q: %w", c.Name, err)
	}
	if err := p.SendSyncMessageTx(ctx, tx, Message{Type: "syncCollection", CollectionName: c.Name}); err != nil {
		return err
	}
	if htx, ok := tx.(*txhooks.Tx); ok {
		htx.AfterCommit(func(ctx context.Context) error {
			p.mu.Lock()
			p.collections[c.Name] = c
			p.mu.Unlock()
			return nil
		})
	}
	return nil
}

// Refresh reloads one collection from the database into this instance's map.
// It reports whether the collection still exists.
func (p *Plugin) Refresh(ctx context.Context, name string) (bool, error) {
	a := p.App()
	if a == nil {
		return false, app.ErrPluginNotBound
	}
	rows, err := a.DB().Query(ctx, `SELECT name, title, fields FROM `+p.table+` WHERE name = $1`, name)
	if err != nil {
		return false, fmt.Errorf("schemasync: reload %q: %w", name, err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, scanCollection)
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		delete(p.collections, name)
		return false, nil
	case err != nil:
		return false, fmt.Errorf("schemasync: reload %q: %w", name, err)
	}
	p.collections[name] = c
	return true, nil
}

// HandleSyncMessage reloads the announced collection from the database
// (the message says what changed, the database says what it is now).
func (p *Plugin) HandleSyncMessage(ctx context.Context, msg listen.Message) error {
	var m Message
	if err := json.Unmarshal(msg.Payload, &m); err != nil {
		return fmt.Errorf("schemasync: bad sync message: %w", err)
	}
	if m.Type != "syncCollection" {
		return nil
	}
	exists, err := p.Refresh(ctx, m.CollectionName)
	if err != nil {
		return err
	}
	p.reloads.Add(1)
	if p.OnReload != nil {
		p.OnReload(Reload{Collection: m.CollectionName, Sender: msg.Sender, Removed: !exists})
	}
	return nil
}
