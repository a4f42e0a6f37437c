package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/connname"
	"github.com/pgcoord/pgcoord/internal/inspectq"
	"github.com/pgcoord/pgcoord/migrations"
)

// Report is what `pgcoord inspect` shows, also its --json shape.
type Report struct {
	Schema string `json:"schema"`
	// SchemaVersion is the database's schema version; ExpectedSchemaVersion
	// the one this build of pgcoord needs.
	SchemaVersion         int64 `json:"schema_version"`
	ExpectedSchemaVersion int64 `json:"expected_schema_version"`
	// Instances is the instance registry of every app, live and dead.
	Instances []app.Instance `json:"instances"`
	// Connections are the sessions named pgcoord/<app>/<instance>/<role>.
	Connections []ConnectionRow `json:"connections"`
	Locks       []LockRow       `json:"locks"`
	Queues      []QueueRow      `json:"queues"`
	Caches      []CacheRow      `json:"caches"`
	Channels    []ChannelRow    `json:"channels"`
	Listens     []ListenerRow   `json:"listeners"`
}

// LockRow is one held lease.
type LockRow struct {
	App       string  `json:"app"`
	Key       string  `json:"key"`
	Owner     string  `json:"owner"`
	Token     int64   `json:"token"`
	ExpiresIn *string `json:"expires_in"` // nil: no expiry
}

// QueueRow counts one channel's messages in one state.
type QueueRow struct {
	Queue   string `json:"queue"`
	Channel string `json:"channel"`
	State   string `json:"state"`
	Count   int64  `json:"count"`
}

// CacheRow summarises one cache (app + prefix).
type CacheRow struct {
	App     string `json:"app"`
	Prefix  string `json:"prefix"`
	Entries int64  `json:"entries"`
	Bytes   int64  `json:"bytes"`
	Expired int64  `json:"expired_awaiting_sweep"`
}

// ChannelRow summarises recent pub/sub traffic of one logical channel.
type ChannelRow struct {
	App      string    `json:"app"`
	Channel  string    `json:"channel"`
	Messages int64     `json:"messages_last_hour"`
	Last     time.Time `json:"last_published_at"`
	Senders  int64     `json:"senders"`
}

// ConnectionRow is one pgcoord connection (by its application_name).
type ConnectionRow struct {
	PID             int32  `json:"pid"`
	ApplicationName string `json:"application_name"`
	App             string `json:"app"`
	InstanceID      string `json:"instance_id"`
	Role            string `json:"role"`
	State           string `json:"state"`
	Since           string `json:"since"`
}

// ListenerRow is one session listening on a pgcoord channel.
type ListenerRow struct {
	PID             int32  `json:"pid"`
	ApplicationName string `json:"application_name"`
	State           string `json:"state"`
	Since           string `json:"since"`
}

const inspectUsage = `Usage: pgcoord inspect [--json] [flags]

Shows, from a live database: the schema version, the instance registry
(live and dead instances), pgcoord's connections by application_name
(pgcoord/<app>/<instance>/<role>), locks held (key, owner, token, expires
in), queues (messages per channel and state), caches (entries, bytes,
expired rows awaiting the sweeper), pub/sub (messages per channel in the
last hour) and the sessions listening for pgcoord notifications.

Flags:
`

func cmdInspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, flags := newCommand("inspect", inspectUsage, stderr)
	asJSON := fs.Bool("json", false, "print one JSON document instead of tables")
	if err := fs.Parse(args); err != nil {
		return err
	}
	db, err := flags.Open(ctx, false, stderr)
	if err != nil {
		return err
	}
	defer db.Close(ctx)
	rep, err := inspect(ctx, db.Pool, flags.Schema)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return printReport(stdout, rep)
}

func inspect(ctx context.Context, pool *pgxpool.Pool, schema string) (*Report, error) {
	v, err := migrations.Version(ctx, pool, &migrations.Options{Schema: schema})
	if err != nil {
		return nil, err
	}
	if v == 0 {
		return nil, fmt.Errorf("schema %q has no pgcoord migrations: run pgcoord migrate up", schema)
	}
	t := func(name string) string { return inspectq.Table(schema, name) }
	rep := &Report{Schema: schema, SchemaVersion: v, ExpectedSchemaVersion: migrations.LatestVersion()}
	if v >= inspectq.RegistryVersion { // the registry came with this migration
		if rep.Instances, err = app.ListInstances(ctx, pool, schema, nil); err != nil {
			return nil, err
		}
	}
	if rep.Connections, err = connections(ctx, pool, rep.Instances); err != nil {
		return nil, err
	}

	// A lease is held when it has not expired (no expiry, or later than the
	// database clock) and its owner's liveness session still holds its
	// identity lock (inspectq.OwnerLive).
	if rep.Locks, err = collect(ctx, pool, "locks", `
		SELECT app, key, owner, token,
		       CASE WHEN expires_at IS NULL THEN NULL ELSE (expires_at - now())::text END
		FROM `+t("locks")+` l
		WHERE (l.expires_at IS NULL OR l.expires_at > now()) AND `+inspectq.OwnerLive+`
		ORDER BY app, key`,
		func(l *LockRow) []any { return []any{&l.App, &l.Key, &l.Owner, &l.Token, &l.ExpiresIn} }); err != nil {
		return nil, err
	}

	if rep.Queues, err = collect(ctx, pool, "queues", `
		SELECT queue, coalesce(args->>'channel', kind), state::text, count(*)
		FROM `+t("river_job")+`
		GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`,
		func(q *QueueRow) []any { return []any{&q.Queue, &q.Channel, &q.State, &q.Count} }); err != nil {
		return nil, err
	}

	if rep.Caches, err = inspectq.Caches[CacheRow](ctx, pool, schema); err != nil {
		return nil, fmt.Errorf("inspect %w", err)
	}

	if rep.Channels, err = collect(ctx, pool, "messages", `
		SELECT app, channel, count(*), max(published_at), count(DISTINCT sender)
		FROM `+t("messages")+`
		WHERE published_at > now() - interval '1 hour' AND sender <> '' -- not listen's retention markers
		GROUP BY 1, 2 ORDER BY 1, 2`,
		func(c *ChannelRow) []any { return []any{&c.App, &c.Channel, &c.Messages, &c.Last, &c.Senders} }); err != nil {
		return nil, err
	}

	// Listener sessions: PostgreSQL shows no other session's LISTENs, but
	// pgcoord names its connections: pub/sub listeners and lock liveness
	// sessions (which LISTEN for lock releases).
	for _, c := range rep.Connections {
		if c.Role == connname.RoleListen || c.Role == connname.RoleLockLiveness {
			rep.Listens = append(rep.Listens, ListenerRow{PID: c.PID, ApplicationName: c.ApplicationName, State: c.State, Since: c.Since})
		}
	}
	return rep, nil
}

// collect runs query and scans each row into the fields of a T that fields
// lists; errors say which part of the report (what) failed.
func collect[T any](ctx context.Context, pool *pgxpool.Pool, what, query string, fields func(*T) []any) ([]T, error) {
	return inspectq.Collect(ctx, pool, "inspect "+what, query, inspectq.Fields(fields))
}

// roles are the roles of pgcoord's connections (see internal/connname).
var roles = []string{connname.RolePool, connname.RoleDirect, connname.RoleListen, connname.RoleLockLiveness,
	connname.RoleQueueLiveness, connname.RoleWrapLock, connname.RoleCheck}

// connections lists the sessions whose application_name starts with
// pgcoord/. A name is attributed to a registered instance when it is the
// name that instance's connection of some role carries (truncation
// included); otherwise it is split at its first and last '/' after the prefix.
func connections(ctx context.Context, pool *pgxpool.Pool, instances []app.Instance) ([]ConnectionRow, error) {
	type owner struct{ app, id, role string }
	known := map[string]owner{}
	for _, in := range instances {
		for _, r := range roles {
			known[connname.Name(in.App, in.ID, r)] = owner{in.App, in.ID, r}
		}
	}
	rows, err := pool.Query(ctx, `
		SELECT pid, application_name, coalesce(state, ''), coalesce((now() - backend_start)::text, '')
		FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND starts_with(application_name, $1)
		ORDER BY application_name, backend_start`, connname.Prefix)
	if err != nil {
		return nil, fmt.Errorf("inspect connections: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (ConnectionRow, error) {
		var c ConnectionRow
		if err := r.Scan(&c.PID, &c.ApplicationName, &c.State, &c.Since); err != nil {
			return c, err
		}
		if o, ok := known[c.ApplicationName]; ok {
			c.App, c.InstanceID, c.Role = o.app, o.id, o.role
			return c, nil
		}
		rest := strings.TrimPrefix(c.ApplicationName, connname.Prefix)
		if i, j := strings.Index(rest, "/"), strings.LastIndex(rest, "/"); i >= 0 && j > i {
			c.App, c.InstanceID, c.Role = rest[:i], rest[i+1:j], rest[j+1:]
		}
		return c, nil
	})
}

func printReport(w io.Writer, rep *Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "SCHEMA %s: version %d (this pgcoord needs %d)\n", rep.Schema, rep.SchemaVersion, rep.ExpectedSchemaVersion)
	fmt.Fprintln(tw, "\nINSTANCES")
	fmt.Fprintln(tw, "APP\tINSTANCE\tALIVE\tHOST\tPID\tVERSION\tSTARTED\tLAST HEARTBEAT\tLIVENESS PID")
	for _, in := range rep.Instances {
		fmt.Fprintf(tw, "%s\t%s\t%t\t%s\t%d\t%s\t%s\t%s\t%d\n", in.App, in.ID, in.Alive, in.Host, in.PID, in.Version,
			in.StartedAt.Format(time.RFC3339), in.HeartbeatAt.Format(time.RFC3339), in.LivenessPID)
	}
	fmt.Fprintln(tw, "\nCONNECTIONS")
	fmt.Fprintln(tw, "PID\tAPP\tINSTANCE\tROLE\tSTATE\tCONNECTED FOR")
	for _, c := range rep.Connections {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", c.PID, c.App, c.InstanceID, c.Role, c.State, c.Since)
	}
	fmt.Fprintf(tw, "\nLOCKS HELD\n")
	fmt.Fprintln(tw, "APP\tKEY\tOWNER\tTOKEN\tEXPIRES IN")
	for _, l := range rep.Locks {
		exp := "never"
		if l.ExpiresIn != nil {
			exp = *l.ExpiresIn
		}
		fmt.Fprintf(tw, "%s\t%q\t%s\t%d\t%s\n", l.App, l.Key, l.Owner, l.Token, exp)
	}
	fmt.Fprintln(tw, "\nQUEUES")
	fmt.Fprintln(tw, "QUEUE\tCHANNEL\tSTATE\tMESSAGES")
	for _, q := range rep.Queues {
		fmt.Fprintf(tw, "%s\t%q\t%s\t%d\n", q.Queue, q.Channel, q.State, q.Count)
	}
	fmt.Fprintln(tw, "\nCACHES")
	fmt.Fprintln(tw, "APP\tPREFIX\tENTRIES\tBYTES\tEXPIRED (awaiting sweep)")
	for _, c := range rep.Caches {
		fmt.Fprintf(tw, "%s\t%q\t%d\t%d\t%d\n", c.App, c.Prefix, c.Entries, c.Bytes, c.Expired)
	}
	fmt.Fprintln(tw, "\nPUB/SUB (last hour)")
	fmt.Fprintln(tw, "APP\tCHANNEL\tMESSAGES\tSENDERS\tLAST")
	for _, c := range rep.Channels {
		fmt.Fprintf(tw, "%s\t%q\t%d\t%d\t%s\n", c.App, c.Channel, c.Messages, c.Senders, c.Last.Format(time.RFC3339))
	}
	fmt.Fprintln(tw, "\nLISTENING SESSIONS")
	fmt.Fprintln(tw, "PID\tAPPLICATION_NAME\tSTATE\tCONNECTED FOR")
	for _, l := range rep.Listens {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", l.PID, l.ApplicationName, l.State, l.Since)
	}
	return tw.Flush()
}
