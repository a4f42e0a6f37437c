// Package fielddestroy is the fourth scenario of NocoBase's cluster plugin
// guide as a pgcoord plugin: removing a field of a collection is serialized
// across the cluster with a lock (Locks().RunExclusive on
// "fields.beforeDestroy:<collection>") and announced to the other instances
// with a sync message, which drop the field from their in-memory schema.
//
// Inside the critical section the removal reads the collection's schema
// version, deletes the field and writes version+1: a read-modify-write that
// would lose updates if two removals of one collection ever overlapped. The
// lock's fencing is checked in the transaction ([advisorylock.Lock.CheckTx]),
// and the sync message is sent in the same transaction
// ([app.PluginBase.SendSyncMessageTx]), so it is delivered if and only if the
// removal commits. (NocoBase sends it after the removal, outside the
// transaction, and its lock is not fenced.)
package fielddestroy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/demo/demoschema"
	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/txhooks"
)

// PluginName is the plugin's name, and so its sync-message channel.
const PluginName = "field-destroy"

// LockTTL is the lease of the removal lock; it is renewed while a removal runs.
const LockTTL = 30 * time.Second

// Message types of the plugin's sync messages.
const (
	TypeRemoveField = "removeField"
	TypeAddFields   = "addFields"
)

// Message is the plugin's sync message (NocoBase's {type: "removeField",
// collectionName, fieldName}).
type Message struct {
	Type           string `json:"type"`
	CollectionName string `json:"collectionName"`
	FieldName      string `json:"fieldName,omitempty"`
}

// Plugin keeps every collection's fields in memory on each instance. Create it
// with New and pass it in app.Config.Plugins.
type Plugin struct {
	app.PluginBase

	// InCriticalSection, when set before Start, is called inside the lock,
	// after the schema version was read and before it is written: a hook for
	// tests and the demo to observe (or widen) the critical section.
	InCriticalSection func(ctx context.Context, collection, field string)
	// OnSync, when set before Start, is called after this instance applied
	// another instance's sync message.
	OnSync func(msg Message, sender string)

	schema   string
	fields   string // sanitized table names
	versions string

	mu       sync.RWMutex // guards inMemory
	inMemory map[string]map[string]bool

	synced atomic.Int64
}

// New returns the plugin. schema holds its tables; "" means "public".
func New(schema string) (*Plugin, error) {
	schema, err := demoschema.Name("fielddestroy", schema)
	if err != nil {
		return nil, err
	}
	return &Plugin{
		schema:   schema,
		fields:   pgx.Identifier{schema, "fields"}.Sanitize(),
		versions: pgx.Identifier{schema, "collection_versions"}.Sanitize(),
		inMemory: map[string]map[string]bool{},
	}, nil
}

// Name implements app.Plugin.
func (p *Plugin) Name() string { return PluginName }

// EnsureSchema creates the plugin's schema and tables (fields,
// collection_versions) if needed, under an advisory transaction lock so that
// instances starting at once do not race.
func EnsureSchema(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	return demoschema.EnsureNew(ctx, pool, schema, New, (*Plugin).ensureSchema)
}

func (p *Plugin) ensureSchema(ctx context.Context, pool *pgxpool.Pool) error {
	return demoschema.Ensure(ctx, pool, p.schema, PluginName, `
			CREATE TABLE IF NOT EXISTS `+p.fields+` (
				collection_name text NOT NULL,
				name            text NOT NULL,
				PRIMARY KEY (collection_name, name)
			);
			CREATE TABLE IF NOT EXISTS `+p.versions+` (
				collection_name text PRIMARY KEY,
				version         bigint NOT NULL DEFAULT 0
			)`)
}

// Load creates the tables if needed and loads every field into memory.
func (p *Plugin) Load(ctx context.Context, a *app.App) error {
	if err := p.ensureSchema(ctx, a.DB()); err != nil {
		return fmt.Errorf("fielddestroy: create tables: %w", err)
	}
	rows, err := a.DB().Query(ctx, `SELECT collection_name, name FROM `+p.fields)
	if err != nil {
		return fmt.Errorf("fielddestroy: load fields: %w", err)
	}
	var coll, name string
	_, err = pgx.ForEachRow(rows, []any{&coll, &name}, func() error {
		p.mu.Lock()
		p.addLocked(coll, name)
		p.mu.Unlock()
		return nil
	})
	if err != nil {
		return fmt.Errorf("fielddestroy: load fields: %w", err)
	}
	return nil
}

func (p *Plugin) addLocked(coll, name string) {
	if p.inMemory[coll] == nil {
		p.inMemory[coll] = map[string]bool{}
	}
	p.inMemory[coll][name] = true
}

// Fields returns this instance's in-memory fields of a collection, sorted.
func (p *Plugin) Fields(collection string) []string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return slices.Sorted(maps.Keys(p.inMemory[collection]))
}

// Synced counts the sync messages this instance applied.
func (p *Plugin) Synced() int64 { return p.synced.Load() }

// Version returns a collection's schema version: how many fields were removed
// from it.
func (p *Plugin) Version(ctx context.Context, collection string) (int64, error) {
	a := p.App()
	if a == nil {
		return 0, app.ErrPluginNotBound
	}
	var v int64
	err := a.DB().QueryRow(ctx, `SELECT coalesce((SELECT version FROM `+p.versions+` WHERE collection_name = $1), 0)`, collection).Scan(&v)
	return v, err
}

// AddFields adds fields to a collection (existing ones are kept) and
// announces it; the other instances reload the collection's fields.
func (p *Plugin) AddFields(ctx context.Context, collection string, names ...string) error {
	a := p.App()
	if a == nil {
		return app.ErrPluginNotBound
	}
	if collection == "" || slices.Contains(names, "") {
		return errors.New("fielddestroy: empty collection or field name")
	}
	return txhooks.Run(ctx, a.DB(), func(ctx context.Context, tx *txhooks.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO `+p.fields+` (collection_name, name) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING`, collection, names); err != nil {
			return fmt.Errorf("fielddestroy: add fields: %w", err)
		}
		if err := p.SendSyncMessageTx(ctx, tx, Message{Type: TypeAddFields, CollectionName: collection}); err != nil {
			return err
		}
		tx.AfterCommit(func(context.Context) error {
			p.mu.Lock()
			for _, n := range names {
				p.addLocked(collection, n)
			}
			p.mu.Unlock()
			return nil
		})
		return nil
	})
}

// RemoveField removes a field of a collection, one removal per collection at
// a time across the cluster, and announces it. It reports whether the field
// existed. The other instances drop it from memory once the removal commits.
func (p *Plugin) RemoveField(ctx context.Context, collection, field string) (removed bool, err error) {
	a := p.App()
	if a == nil {
		return false, app.ErrPluginNotBound
	}
	if collection == "" || field == "" {
		return false, errors.New("fielddestroy: empty collection or field name")
	}
	key := "fields.beforeDestroy:" + collection
	err = a.Locks().RunExclusive(ctx, key, LockTTL, func(ctx context.Context, l *advisorylock.Lock) error {
		return txhooks.Run(ctx, a.DB(), func(ctx context.Context, tx *txhooks.Tx) error {
			// Fencing: the write commits only while this grant is the holder.
			if err := l.CheckTx(ctx, tx); err != nil {
				return err
			}
			var version int64
			if err := tx.QueryRow(ctx, `SELECT coalesce((SELECT version FROM `+p.versions+` WHERE collection_name = $1), 0)`, collection).Scan(&version); err != nil {
				return err
			}
			if p.InCriticalSection != nil {
				p.InCriticalSection(ctx, collection, field)
			}
			tag, err := tx.Exec(ctx, `DELETE FROM `+p.fields+` WHERE collection_name = $1 AND name = $2`, collection, field)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				return nil
			}
			// Not "version = version + 1": the lock, not the row, keeps this
			// read-modify-write correct, which is what the example shows.
			if _, err := tx.Exec(ctx, `
				INSERT INTO `+p.versions+` (collection_name, version) VALUES ($1, $2)
				ON CONFLICT (collection_name) DO UPDATE SET version = EXCLUDED.version`, collection, version+1); err != nil {
				return err
			}
			if err := p.SendSyncMessageTx(ctx, tx, Message{Type: TypeRemoveField, CollectionName: collection, FieldName: field}); err != nil {
				return err
			}
			tx.AfterCommit(func(context.Context) error {
				p.drop(collection, field)
				removed = true
				return nil
			})
			return nil
		})
	})
	if err != nil {
		return false, fmt.Errorf("fielddestroy: remove %s.%s: %w", collection, field, err)
	}
	return removed, nil
}

func (p *Plugin) drop(collection, field string) {
	p.mu.Lock()
	delete(p.inMemory[collection], field)
	if len(p.inMemory[collection]) == 0 {
		delete(p.inMemory, collection)
	}
	p.mu.Unlock()
}

// HandleSyncMessage applies another instance's change to this instance's
// in-memory fields.
func (p *Plugin) HandleSyncMessage(ctx context.Context, msg listen.Message) error {
	var m Message
	if err := json.Unmarshal(msg.Payload, &m); err != nil {
		return fmt.Errorf("fielddestroy: bad sync message: %w", err)
	}
	switch m.Type {
	case TypeRemoveField:
		p.drop(m.CollectionName, m.FieldName)
	case TypeAddFields:
		if err := p.reload(ctx, m.CollectionName); err != nil {
			return err
		}
	default:
		return nil
	}
	p.synced.Add(1)
	if p.OnSync != nil {
		p.OnSync(m, msg.Sender)
	}
	return nil
}

func (p *Plugin) reload(ctx context.Context, collection string) error {
	rows, err := p.App().DB().Query(ctx, `SELECT name FROM `+p.fields+` WHERE collection_name = $1`, collection)
	if err != nil {
		return fmt.Errorf("fielddestroy: reload %q: %w", collection, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("fielddestroy: reload %q: %w", collection, err)
	}
	p.mu.Lock()
	delete(p.inMemory, collection)
	for _, n := range names {
		p.addLocked(collection, n)
	}
	p.mu.Unlock()
	return nil
}
