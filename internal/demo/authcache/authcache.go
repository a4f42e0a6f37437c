// Package authcache is the first scenario of NocoBase's cluster plugin guide
// as a pgcoord plugin: the auth plugin caches its token policy (a row of
// token_policies) in a cache stored in PostgreSQL, so every instance of the
// app shares one cached copy and the loader runs once for the whole cluster.
//
// Copy it as a starting point: [Plugin.Load] creates the "auth" cache,
// [Plugin.Policy] reads through it with [pgcache.Wrap], and
// [Plugin.UpdatePolicy] writes the row and deletes the cached copy in the same
// transaction, so no instance reads the old policy from the cache once the
// update has committed.
//
// Residual staleness: an instance that read the old row just before the
// update committed may store it after the delete; the cache TTL (one minute)
// bounds how long that copy lives. NocoBase has the same window.
package authcache

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/demo/demoschema"
	"github.com/pgcoord/pgcoord/pgcache"
	"github.com/pgcoord/pgcoord/txhooks"
)

// PluginName is the plugin's name.
const PluginName = "auth"

// PolicyKey is the cache key of the default token policy (NocoBase's
// "token:config").
const PolicyKey = "token:config"

// DefaultPolicyID is the id of the token policy the plugin reads.
const DefaultPolicyID = "default"

// CacheTTL is how long a cached policy lives.
const CacheTTL = time.Minute

// ErrNoPolicy is returned by Policy when token_policies has no default row.
var ErrNoPolicy = errors.New("authcache: no default token policy")

// TokenPolicy is a row of token_policies.
type TokenPolicy struct {
	ID string `json:"id"`
	// TokenExpiry is how long an issued token is valid.
	TokenExpiry time.Duration `json:"tokenExpiry"`
	// RenewWindow is how long after expiry a token may still be renewed.
	RenewWindow time.Duration `json:"renewWindow"`
}

// Plugin caches the token policy. Create it with New and pass it in
// app.Config.Plugins; it is safe for concurrent use once the app started.
type Plugin struct {
	schema string
	table  string // sanitized schema.token_policies

	app   *app.App
	cache *pgcache.Cache

	loads atomic.Int64
}

// New returns the plugin. schema holds its table; "" means "public".
func New(schema string) (*Plugin, error) {
	schema, err := demoschema.Name("authcache", schema)
	if err != nil {
		return nil, err
	}
	return &Plugin{schema: schema, table: pgx.Identifier{schema, "token_policies"}.Sanitize()}, nil
}

// Name implements app.Plugin.
func (p *Plugin) Name() string { return PluginName }

// EnsureSchema creates the plugin's schema and token_policies table if they do
// not exist, under an advisory transaction lock so that instances starting at
// once do not race on CREATE TABLE.
func EnsureSchema(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	return demoschema.EnsureNew(ctx, pool, schema, New, (*Plugin).ensureSchema)
}

func (p *Plugin) ensureSchema(ctx context.Context, pool *pgxpool.Pool) error {
	return demoschema.Ensure(ctx, pool, p.schema, PluginName, `
			CREATE TABLE IF NOT EXISTS `+p.table+` (
				id           text PRIMARY KEY,
				token_expiry bigint NOT NULL,
				renew_window bigint NOT NULL
			)`)
}

// Load creates the table (if needed) and the "auth" cache, stored in
// PostgreSQL and shared by every instance. ClusterSingleFlight makes a miss
// load the row once across the cluster, even when every instance misses at once.
func (p *Plugin) Load(ctx context.Context, a *app.App) error {
	if err := p.ensureSchema(ctx, a.DB()); err != nil {
		return fmt.Errorf("authcache: create table: %w", err)
	}
	c, err := a.CacheManager().CreateCache(ctx, pgcache.CacheConfig{
		Name: "auth", Prefix: "auth", TTL: CacheTTL, ClusterSingleFlight: true,
	})
	if err != nil {
		return fmt.Errorf("authcache: create cache: %w", err)
	}
	p.app, p.cache = a, c
	return nil
}

// Cache is the plugin's cache (nil before Load).
func (p *Plugin) Cache() *pgcache.Cache { return p.cache }

// Loads counts how many times this instance read the policy from the table.
func (p *Plugin) Loads() int64 { return p.loads.Load() }

// Policy returns the default token policy, from the shared cache when it is
// there, else from token_policies (and caches it for CacheTTL). loaded reports
// whether this call ran the loader.
func (p *Plugin) Policy(ctx context.Context) (policy TokenPolicy, loaded bool, err error) {
	if p.cache == nil {
		return TokenPolicy{}, false, errors.New("authcache: plugin not loaded")
	}
	policy, err = pgcache.Wrap(ctx, p.cache, PolicyKey, func(ctx context.Context) (TokenPolicy, error) {
		loaded = true
		p.loads.Add(1)
		return p.load(ctx)
	}, 0)
	return policy, loaded, err
}

func (p *Plugin) load(ctx context.Context) (TokenPolicy, error) {
	var tp TokenPolicy
	var exp, renew int64
	err := p.app.DB().QueryRow(ctx, `SELECT id, token_expiry, renew_window FROM `+p.table+` WHERE id = $1`, DefaultPolicyID).
		Scan(&tp.ID, &exp, &renew)
	if errors.Is(err, pgx.ErrNoRows) {
		return TokenPolicy{}, ErrNoPolicy
	}
	if err != nil {
		return TokenPolicy{}, fmt.Errorf("authcache: load policy: %w", err)
	}
	tp.TokenExpiry, tp.RenewWindow = time.Duration(exp), time.Duration(renew)
	return tp, nil
}

// UpdatePolicy writes the default policy (inserting it if missing) and
// deletes the cached copy in the same transaction: on commit every instance
// misses and reloads the new row; on rollback the row and the cache are
// unchanged.
func (p *Plugin) UpdatePolicy(ctx context.Context, policy TokenPolicy) error {
	if p.cache == nil {
		return errors.New("authcache: plugin not loaded")
	}
	if policy.TokenExpiry <= 0 {
		return errors.New("authcache: TokenExpiry must be positive")
	}
	return txhooks.Run(ctx, p.app.DB(), func(ctx context.Context, tx *txhooks.Tx) error {
		if _, err := tx.Exec(ctx, `
			INSERT INTO `+p.table+` (id, token_expiry, renew_window) VALUES ($1, $2, $3)
			ON CONFLICT (id) DO UPDATE SET token_expiry = EXCLUDED.token_expiry, renew_window = EXCLUDED.renew_window`,
			DefaultPolicyID, int64(policy.TokenExpiry), int64(policy.RenewWindow)); err != nil {
			return fmt.Errorf("authcache: write policy: %w", err)
		}
		return p.cache.DelTx(ctx, tx, PolicyKey)
	})
}
