package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/migrations"
)

// Report is what `pgcoord inspect` shows, also its --json shape.
type Report struct {
	Schema   string        `json:"schema"`
	Locks    []LockRow     `json:"locks"`
	Queues   []QueueRow    `json:"queues"`
	Caches   []CacheRow    `json:"caches"`
	Channels []ChannelRow  `json:"channels"`
	Listens  []ListenerRow `json:"listeners"`
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

// ListenerRow is one session listening on a pgcoord channel.
type ListenerRow struct {
	PID             int32  `json:"pid"`
	ApplicationName string `json:"application_name"`
	State           string `json:"state"`
	Since           string `json:"since"`
}

func cmdInspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("pgcoord inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var db dbFlags
	db.register(fs)
	asJSON := fs.Bool("json", false, "print one JSON document instead of tables")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: pgcoord inspect [--json] [flags]

Shows, from a live database: locks held (key, owner, token, expires in),
queues (messages per channel and state), caches (entries, bytes, expired
rows awaiting the sweeper), pub/sub (messages per channel in the last hour)
and the sessions listening for pgcoord notifications.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := migrations.ValidateSchema(db.schema); err != nil {
		return err
	}
	pool, _, err := db.open(ctx, false, stderr)
	if err != nil {
		return err
	}
	defer pool.Close()
	rep, err := inspect(ctx, pool, db.schema)
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
	t := func(name string) string { return pgx.Identifier{schema, name}.Sanitize() }
	rep := &Report{Schema: schema}

	// A lease is held when it has not expired (no expiry, or later than the
	// database clock) and its owner's liveness session still holds its
	// identity lock (an exclusive advisory lock whose second key is owner_id).
	rows, err := pool.Query(ctx, `
		SELECT app, key, owner, token,
		       CASE WHEN expires_at IS NULL THEN NULL ELSE (expires_at - now())::text END
		FROM `+t("locks")+` l
		WHERE (l.expires_at IS NULL OR l.expires_at > now())
		  AND EXISTS (SELECT 1 FROM pg_locks p WHERE p.locktype = 'advisory' AND p.granted
		              AND p.mode = 'ExclusiveLock' AND p.objsubid = 2 AND p.objid = l.owner_id::oid
		              AND p.database = (SELECT oid FROM pg_database WHERE datname = current_database()))
		ORDER BY app, key`)
	if err != nil {
		return nil, fmt.Errorf("inspect locks: %w", err)
	}
	rep.Locks, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (LockRow, error) {
		var l LockRow
		return l, r.Scan(&l.App, &l.Key, &l.Owner, &l.Token, &l.ExpiresIn)
	})
	if err != nil {
		return nil, fmt.Errorf("inspect locks: %w", err)
	}

	rows, err = pool.Query(ctx, `
		SELECT queue, coalesce(args->>'channel', kind), state::text, count(*)
		FROM `+t("river_job")+`
		GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`)
	if err != nil {
		return nil, fmt.Errorf("inspect queues: %w", err)
	}
	rep.Queues, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (QueueRow, error) {
		var q QueueRow
		return q, r.Scan(&q.Queue, &q.Channel, &q.State, &q.Count)
	})
	if err != nil {
		return nil, fmt.Errorf("inspect queues: %w", err)
	}

	rows, err = pool.Query(ctx, `
		SELECT app, prefix, count(*), coalesce(sum(octet_length(value)), 0)::bigint,
		       count(*) FILTER (WHERE expires_at <= now())
		FROM `+t("cache_entries")+`
		GROUP BY 1, 2 ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("inspect caches: %w", err)
	}
	rep.Caches, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (CacheRow, error) {
		var c CacheRow
		return c, r.Scan(&c.App, &c.Prefix, &c.Entries, &c.Bytes, &c.Expired)
	})
	if err != nil {
		return nil, fmt.Errorf("inspect caches: %w", err)
	}

	rows, err = pool.Query(ctx, `
		SELECT app, channel, count(*), max(published_at), count(DISTINCT sender)
		FROM `+t("messages")+`
		WHERE published_at > now() - interval '1 hour'
		GROUP BY 1, 2 ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("inspect messages: %w", err)
	}
	rep.Channels, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (ChannelRow, error) {
		var c ChannelRow
		return c, r.Scan(&c.App, &c.Channel, &c.Messages, &c.Last, &c.Senders)
	})
	if err != nil {
		return nil, fmt.Errorf("inspect messages: %w", err)
	}

	// Listener sessions. PostgreSQL shows no other session's LISTENs, so
	// they are recognised by their last statement: a pgcoord listener
	// connection only ever runs LISTEN and its catch-up reads of the messages
	// log (bounded by its snapshot, with the server's system_identifier)
	// while it waits for notifications; a lock liveness session last checks
	// pg_listening_channels(). (A guess from query text until connections
	// carry their role in application_name.)
	rows, err = pool.Query(ctx, `
		SELECT pid, application_name, coalesce(state, ''), coalesce((now() - backend_start)::text, '')
		FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle'
		  AND (query ILIKE 'listen %' OR query LIKE '%pg_listening_channels()%'
		       OR (query LIKE '%pg_current_snapshot()%' AND (query LIKE '%pg_control_system()%' OR query LIKE '%' || $1 || '%')))
		ORDER BY backend_start`, pgx.Identifier{schema, "messages"}.Sanitize())
	if err != nil {
		return nil, fmt.Errorf("inspect listeners: %w", err)
	}
	rep.Listens, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (ListenerRow, error) {
		var l ListenerRow
		return l, r.Scan(&l.PID, &l.ApplicationName, &l.State, &l.Since)
	})
	if err != nil {
		return nil, fmt.Errorf("inspect listeners: %w", err)
	}
	return rep, nil
}

func printReport(w io.Writer, rep *Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "LOCKS HELD (schema %s)\n", rep.Schema)
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
