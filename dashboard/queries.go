package dashboard

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/inspectq"
	"github.com/pgcoord/pgcoord/migrations"
)

// errBadInput marks a request whose form values are not acceptable.
var errBadInput = errors.New("dashboard: bad input")

// latestLimit is how many messages the Channels page lists.
const latestLimit = 50

// collect and each are inspectq's, shared with `pgcoord inspect`.
func collect[T any](ctx context.Context, db inspectq.Querier, what, sql string, scan pgx.RowToFunc[T], args ...any) ([]T, error) {
	return inspectq.Collect(ctx, db, what, sql, scan, args...)
}

func each(ctx context.Context, db inspectq.Querier, what, sql string, dest []any, fn func() error, args ...any) error {
	return inspectq.Each(ctx, db, what, sql, dest, fn, args...)
}

type queries struct {
	pool   *pgxpool.Pool
	schema string
	msgs   string // quoted messages table
	locksT string
}

func newQueries(pool *pgxpool.Pool, schema string) *queries {
	return &queries{pool: pool, schema: schema, msgs: inspectq.Table(schema, "messages"), locksT: inspectq.Table(schema, "locks")}
}

// Cluster is the Cluster page's data.
type Cluster struct {
	// SchemaVersion is the database's pgcoord schema version; SchemaWanted
	// the version this build needs.
	SchemaVersion int64 `json:"schema_version"`
	SchemaWanted  int64 `json:"schema_wanted"`
	// ServerVersion is PostgreSQL's server_version.
	ServerVersion string `json:"server_version"`
	// NotifyQueueUsage is pg_notification_queue_usage() (0..1).
	NotifyQueueUsage float64    `json:"notify_queue_usage"`
	Instances        []Instance `json:"instances"`
}

// Instance is one pgcoord instance: its row in the instance registry (see
// app.App.Instances) joined with its sessions, every connection whose
// application_name is pgcoord/<app>/<instance>[/<role>] (or pgcoordtest/...).
// An instance with sessions but no registry row (a component used without
// app.App, or a schema older than the registry) is shown from its sessions.
type Instance struct {
	App string `json:"app"`
	ID  string `json:"instance_id"`
	// Live is the registry's verdict (the instance's liveness session still
	// holds its lock) when the instance is registered, else whether it has a
	// session at all.
	Live bool   `json:"live"`
	Host string `json:"host"`
	// Registered says the instance has a registry row; Version, PID,
	// HeartbeatAgeMillis and Stats come from it.
	Registered bool `json:"registered"`
	// Version is the pgcoord version the instance runs; PID its process id.
	Version string `json:"version,omitempty"`
	PID     int    `json:"pid,omitempty"`
	// HeartbeatAgeMillis is how long ago the instance last refreshed its
	// registry row (database clock).
	HeartbeatAgeMillis int64 `json:"heartbeat_age_ms"`
	// Stats is the counter snapshot of its last heartbeat (messages
	// published and delivered, reconnects, locks held, ...).
	Stats map[string]int64 `json:"stats,omitempty"`
	// ListenerLagMillis is how far behind its pub/sub listener was at its
	// last heartbeat: the database's now() minus the time of the listener's
	// latest complete read of the log, every message committed before which
	// has been handed to its subscriptions (see app.InstanceStats). Under
	// about a second (listen's PollInterval) while healthy; it grows while
	// the listener is disconnected or catching up. -1 when unknown.
	ListenerLagMillis int64 `json:"listener_lag_ms"`
	Connections       int   `json:"connections"`
	// Roles are the connection roles seen (listen, lock, queue, ...).
	Roles []string `json:"roles"`
	// UptimeMillis is the age of the instance's oldest session.
	UptimeMillis int64 `json:"uptime_ms"`
	// LastActivityMillis is how long ago any of its sessions last changed
	// state (a heartbeat, a query, a notification read).
	LastActivityMillis int64 `json:"last_activity_ms"`
}

func (q *queries) cluster(ctx context.Context) (*Cluster, error) {
	c := &Cluster{SchemaWanted: migrations.LatestVersion(), Instances: []Instance{}}
	v, err := migrations.Version(ctx, q.pool, &migrations.Options{Schema: q.schema})
	if err != nil {
		return nil, fmt.Errorf("schema version: %w", err)
	}
	c.SchemaVersion = v
	var now time.Time // the database clock, for the registry's times
	if err := q.pool.QueryRow(ctx, `SELECT current_setting('server_version'), pg_notification_queue_usage(), now()`).
		Scan(&c.ServerVersion, &c.NotifyQueueUsage, &now); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	type sess struct {
		name, host  string
		up, lastAct int64
	}
	ss, err := collect(ctx, q.pool, "sessions", `
		SELECT application_name, coalesce(host(client_addr), 'local socket'),
		       (extract(epoch FROM now() - backend_start) * 1000)::bigint,
		       (extract(epoch FROM now() - coalesce(state_change, backend_start)) * 1000)::bigint
		FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()
		  AND (application_name LIKE 'pgcoord/%' OR application_name LIKE 'pgcoordtest/%')
		  AND application_name NOT LIKE 'pgcoord/dashboard%'
		ORDER BY application_name`, func(r pgx.CollectableRow) (sess, error) {
		var s sess
		return s, r.Scan(&s.name, &s.host, &s.up, &s.lastAct)
	})
	if err != nil {
		return nil, err
	}
	idx := map[[2]string]int{}
	for _, s := range ss {
		parts := strings.SplitN(s.name, "/", 4)
		if len(parts) < 3 {
			continue
		}
		k := [2]string{parts[1], parts[2]}
		i, ok := idx[k]
		if !ok {
			i = len(c.Instances)
			idx[k] = i
			c.Instances = append(c.Instances, Instance{App: k[0], ID: k[1], Host: s.host, Live: true, LastActivityMillis: s.lastAct, Roles: []string{}, ListenerLagMillis: -1})
		}
		in := &c.Instances[i]
		in.Connections++
		in.UptimeMillis = max(in.UptimeMillis, s.up)
		in.LastActivityMillis = min(in.LastActivityMillis, s.lastAct)
		if len(parts) == 4 && !contains(in.Roles, parts[3]) {
			in.Roles = append(in.Roles, parts[3])
		}
	}
	if c.SchemaVersion < inspectq.RegistryVersion { // an older schema shows sessions only
		return c, nil
	}
	reg, err := app.ListInstances(ctx, q.pool, q.schema, nil)
	if err != nil {
		return nil, err
	}
	for _, r := range reg {
		k := [2]string{r.App, r.ID}
		i, ok := idx[k]
		if !ok {
			// Registered but without a session: dead (or partitioned),
			// until the registry sweeps its row.
			i = len(c.Instances)
			idx[k] = i
			c.Instances = append(c.Instances, Instance{App: r.App, ID: r.ID, Host: r.Host, Roles: []string{}, ListenerLagMillis: -1,
				UptimeMillis: now.Sub(r.StartedAt).Milliseconds(), LastActivityMillis: now.Sub(r.HeartbeatAt).Milliseconds()})
		}
		in := &c.Instances[i]
		in.Registered, in.Live, in.Version, in.PID = true, r.Alive, r.Version, r.PID
		in.Host = r.Host
		in.UptimeMillis = now.Sub(r.StartedAt).Milliseconds()
		in.HeartbeatAgeMillis = now.Sub(r.HeartbeatAt).Milliseconds()
		st := r.DecodeStats() // a malformed snapshot shows no stats
		in.Stats, in.ListenerLagMillis = st.Counters, st.ListenerLagMillis
	}
	return c, nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// Channels is the Channels page's data.
type Channels struct {
	// Minutes are the chart's minute buckets, oldest first (database clock).
	Minutes  []time.Time    `json:"minutes"`
	Channels []ChannelStats `json:"channels"`
	Latest   []Message      `json:"latest"`
}

// ChannelStats is one logical channel's recent traffic.
type ChannelStats struct {
	App     string `json:"app"`
	Channel string `json:"channel"`
	// PerMinute counts messages in each of Channels.Minutes.
	PerMinute []int64 `json:"per_minute"`
	Total     int64   `json:"total"`
	Senders   int64   `json:"senders"`
	// LastAgeMillis is how long ago the channel's last message was published.
	LastAgeMillis int64 `json:"last_age_ms"`
	Chart         Chart `json:"-"`
}

// Message is one published message as the dashboard shows it.
type Message struct {
	ID      int64  `json:"id"`
	App     string `json:"app"`
	Channel string `json:"channel"`
	Sender  string `json:"sender"`
	// Preview is the payload's JSON text, cut to its first 240
	// characters; PayloadBytes is its full size.
	Preview      string `json:"preview"`
	PayloadBytes int64  `json:"payload_bytes"`
	// AgeMillis is the message's age when read (database clock); in the
	// live tail it is the delivery lag from commit to the dashboard.
	AgeMillis   int64     `json:"age_ms"`
	PublishedAt time.Time `json:"published_at"`
}

// Rows with an empty sender are listen's retention markers (see
// listen/prune.go), not messages: every query of messages leaves them out.

// messageCols selects a Message (after the table's alias m).
const messageCols = `m.id, m.app, m.channel, m.sender, left(m.payload::text, 240), octet_length(m.payload::text),
	(extract(epoch FROM clock_timestamp() - m.published_at) * 1000)::bigint, m.published_at`

func scanMessage(r pgx.CollectableRow) (Message, error) {
	var m Message
	err := r.Scan(&m.ID, &m.App, &m.Channel, &m.Sender, &m.Preview, &m.PayloadBytes, &m.AgeMillis, &m.PublishedAt)
	return m, err
}

func (q *queries) channels(ctx context.Context) (*Channels, error) {
	c := &Channels{Channels: []ChannelStats{}}
	idx := map[[2]string]int{}
	var minute time.Time
	var app, ch *string // NULL in the one row of a log without recent messages
	var bucket int
	var n, senders, age int64
	// The current minute (database clock) comes with every row; the outer
	// join gives one row when no channel has recent messages.
	err := each(ctx, q.pool, "channels", `
		SELECT t.minute, s.app, s.channel, coalesce(s.bucket, 0), coalesce(s.n, 0), coalesce(s.senders, 0), coalesce(s.age, 0)
		FROM (SELECT date_trunc('minute', now()) AS minute) t
		LEFT JOIN LATERAL (
			SELECT app, channel, $1::int - 1 - floor(extract(epoch FROM t.minute - date_trunc('minute', published_at)) / 60)::int AS bucket,
			       count(*) AS n, count(DISTINCT sender) AS senders,
			       (extract(epoch FROM now() - max(published_at)) * 1000)::bigint AS age
			FROM `+q.msgs+`
			WHERE published_at >= t.minute - make_interval(mins => $1::int - 1) AND sender <> ''
			GROUP BY 1, 2, 3
		) s ON true
		ORDER BY 2, 3, 4`, []any{&minute, &app, &ch, &bucket, &n, &senders, &age}, func() error {
		if c.Minutes == nil {
			for i := RateMinutes - 1; i >= 0; i-- {
				c.Minutes = append(c.Minutes, minute.Add(-time.Duration(i)*time.Minute))
			}
		}
		if app == nil {
			return nil
		}
		k := [2]string{*app, *ch}
		i, ok := idx[k]
		if !ok {
			i = len(c.Channels)
			idx[k] = i
			c.Channels = append(c.Channels, ChannelStats{App: *app, Channel: *ch, PerMinute: make([]int64, RateMinutes), LastAgeMillis: age})
		}
		s := &c.Channels[i]
		if bucket >= 0 && bucket < RateMinutes {
			s.PerMinute[bucket] += n
		}
		s.Total += n
		s.Senders = max(s.Senders, senders)
		s.LastAgeMillis = min(s.LastAgeMillis, age)
		return nil
	}, RateMinutes)
	if err != nil {
		return nil, err
	}
	for i := range c.Channels {
		c.Channels[i].Chart = newChart(c.Channels[i].PerMinute)
	}
	c.Latest, err = collect(ctx, q.pool, "latest messages", `SELECT `+messageCols+` FROM `+q.msgs+` m WHERE m.sender <> '' ORDER BY m.id DESC LIMIT $1`, scanMessage, latestLimit)
	if err != nil {
		return nil, err
	}
	if c.Latest == nil {
		c.Latest = []Message{}
	}
	return c, nil
}

// Locks is the Locks page's data.
type Locks struct {
	// Held are the leases held now.
	Held []Lease `json:"held"`

	// TakenOver are held leases granted by taking over another holder's
	// lapsed lease.
	TakenOver []Lease `json:"taken_over"`
	// Lost are leases that ended without a release in the last hour: their
	// TTL passed, or their holder's liveness session is gone.
	Lost []Lease `json:"lost"`
}

// Lease is one row of the lease table.
type Lease struct {
	// App and Key name the lock.
	App string `json:"app"`
	Key string `json:"key"`

	// Owner is the holder's instance id (the last holder's, for a lost lease).
	Owner string `json:"holder"`
	// Token is the grant's fencing token.
	Token int64 `json:"token"`

	// TTLMillis is the time left; -1 means no expiry.
	TTLMillis int64 `json:"ttl_ms"`
	// Waiters: 0 none, 1 one instance, -1 several.
	Waiters int `json:"waiters"`
	// HeldForMillis is the time since the grant.
	HeldForMillis int64 `json:"held_for_ms"`
	// TakenFrom is the instance whose lapsed lease this grant took over.
	TakenFrom string `json:"taken_from,omitempty"`
	// Reason says why a lost lease was lost.
	Reason string `json:"reason,omitempty"`
	// SinceMillis is the time since the row last changed.
	SinceMillis int64 `json:"since_ms"`

	// TokenString and WaitersDisplay are for the page.
	TokenString, WaitersDisplay string `json:"-"`
}

func (q *queries) locks(ctx context.Context) (*Locks, error) {
	// live is true while the owner's liveness session holds its identity
	// lock (inspectq.OwnerLive).
	query := `
		SELECT app, key, owner, token,
		       CASE WHEN expires_at IS NULL THEN -1
		            ELSE greatest(0, extract(epoch FROM expires_at - now()) * 1000)::bigint END,
		       wanted_by, (extract(epoch FROM now() - acquired_at) * 1000)::bigint, coalesce(taken_from, ''),
		       (expires_at IS NULL OR expires_at > now()) AS unexpired,
		       ` + inspectq.OwnerLive + ` AS live,
		       (extract(epoch FROM now() - updated_at) * 1000)::bigint
		FROM ` + q.locksT + ` l
		WHERE expires_at IS DISTINCT FROM '-infinity'
		  AND (expires_at IS NULL OR expires_at > now() - interval '1 hour')
		ORDER BY app, key
		LIMIT 1000`
	out := &Locks{Held: []Lease{}, TakenOver: []Lease{}, Lost: []Lease{}}
	var l Lease
	var wanted int32
	var unexpired, live bool
	dest := []any{&l.App, &l.Key, &l.Owner, &l.Token, &l.TTLMillis, &wanted, &l.HeldForMillis, &l.TakenFrom, &unexpired, &live, &l.SinceMillis}
	err := each(ctx, q.pool, "locks", query, dest, func() error {
		x := l
		x.TokenString = strconv.FormatInt(x.Token, 10)
		switch {
		case wanted == 0:
			x.Waiters, x.WaitersDisplay = 0, "0"
		case wanted < 0:
			x.Waiters, x.WaitersDisplay = -1, "several"
		default:
			x.Waiters, x.WaitersDisplay = 1, "1"
		}
		switch {
		case unexpired && live:
			out.Held = append(out.Held, x)
			if x.TakenFrom != "" {
				out.TakenOver = append(out.TakenOver, x)
			}
		case !unexpired:
			x.Reason = "TTL passed"
			out.Lost = append(out.Lost, x)
		default:
			x.Reason = "holder's session gone"
			out.Lost = append(out.Lost, x)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// forceFree frees the lease (app, key) if it still carries token.
func (q *queries) forceFree(ctx context.Context, app, key, token string) (bool, error) {
	tok, err := strconv.ParseInt(token, 10, 64)
	if err != nil || app == "" || key == "" {
		return false, fmt.Errorf("%w: force free needs app, key and a numeric token", errBadInput)
	}
	// advisorylock's own forced release: like the holder's release it
	// never ends a later grant (token), and it hands the key to the first
	// live instance waiting for it, which is notified at once.
	freed, err := advisorylock.ForceRelease(ctx, q.pool, &advisorylock.Config{AppName: app, Schema: q.schema}, key, tok)
	if errors.Is(err, advisorylock.ErrInvalidKey) || errors.Is(err, advisorylock.ErrInvalidConfig) {
		return false, fmt.Errorf("%w: %w", errBadInput, err)
	}
	return freed, err
}

// Caches is the Caches page's data.
type Caches struct {
	Caches []CacheStats `json:"caches"`
	// HitRates are the read counters of every cache of every registered
	// instance, from the stats snapshot of its last heartbeat.
	HitRates []CacheHitRate `json:"hit_rates"`
}

// CacheHitRate is one cache's reads on one instance since the cache was
// created there.
type CacheHitRate struct {
	App      string `json:"app"`
	Instance string `json:"instance_id"`
	Live     bool   `json:"live"`
	app.CacheStats
	// HitRate is Hits / (Hits + Misses); NearHitRate NearHits / (Hits +
	// Misses), the share of reads the near-cache answered without a round
	// trip. -1 when the cache has had no read.
	HitRate     float64 `json:"hit_rate"`
	NearHitRate float64 `json:"near_hit_rate"`
	// Display forms for the page.
	HitRateText, NearHitRateText string `json:"-"`
}

// newHitRate computes the rates of one cache's counters.
func newHitRate(in app.Instance, c app.CacheStats) CacheHitRate {
	h := CacheHitRate{App: in.App, Instance: in.ID, Live: in.Alive, CacheStats: c, HitRate: -1, NearHitRate: -1,
		HitRateText: "no reads", NearHitRateText: "no reads"}
	if reads := c.Hits + c.Misses; reads > 0 {
		h.HitRate, h.NearHitRate = float64(c.Hits)/float64(reads), float64(c.NearHits)/float64(reads)
		h.HitRateText, h.NearHitRateText = formatPercent(h.HitRate), formatPercent(h.NearHitRate)
		if c.NearHits+c.NearMisses == 0 {
			h.NearHitRateText = "no near-cache reads"
		}
	}
	return h
}

// CacheStats summarises one cache (app and prefix) of the postgres store.
type CacheStats struct {
	App     string `json:"app"`
	Prefix  string `json:"prefix"`
	Entries int64  `json:"entries"`
	Bytes   int64  `json:"bytes"`
	// Expired counts expired entries the sweeper has not deleted yet.
	Expired int64 `json:"expired_not_swept"`
}

func (q *queries) caches(ctx context.Context) (*Caches, error) {
	cs, err := inspectq.Caches[CacheStats](ctx, q.pool, q.schema)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		cs = []CacheStats{}
	}
	out := &Caches{Caches: cs, HitRates: []CacheHitRate{}}
	reg, err := app.ListInstances(ctx, q.pool, q.schema, nil)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
			return out, nil // a schema older than the registry
		}
		return nil, err
	}
	for _, in := range reg {
		for _, c := range in.DecodeStats().Caches {
			out.HitRates = append(out.HitRates, newHitRate(in, c))
		}
	}
	return out, nil
}
