// Package listen is cluster publish/subscribe on PostgreSQL LISTEN/NOTIFY that
// loses nothing: NocoBase's PubSubManager ([PubSub]) and SyncMessageManager
// ([SyncMessages]).
//
// Every instance of an app creates one [PubSub] with [New] over its pool,
// subscribes handlers with [PubSub.Subscribe], and calls [PubSub.Start].
// [PubSub.Publish] and [PubSub.PublishTx] reach every other instance of the
// same app by default ([PublishOpts] adds or restricts to the publisher).
//
// # How it works
//
// Each message is a row of the messages table (migration 00009, in the
// configured schema) carrying the publishing transaction's xid8. The same
// statement, or the caller's transaction, NOTIFYs the app's single physical
// channel, whose name is derived from a hash of schema and app name (logical
// channel names are only ever data, never SQL identifiers). Small messages
// travel inline in the notification; larger ones (about 7.8 kB and up) travel
// by id and the listener reads the row. A transaction publishing through
// PublishTx sends one constant wake-up notification, which PostgreSQL folds
// into one per transaction however many messages it publishes; listeners then
// read the new rows. Concurrent Publish calls of one instance are grouped into
// one statement (group commit): their rows commit together under a single
// NOTIFY carrying all of them when they fit, a wake-up otherwise. NOTIFY
// serialises the commits of the transactions that send one, so this keeps
// the cost at one NOTIFY per transaction.
//
// Each PubSub has one dedicated listener connection (pgx.Connect with the
// pool's connection configuration; LISTEN does not work through a pooled or
// transaction-pooled connection). Every [Config.PollInterval], and on each
// wake-up, it reads the log (a catch-up): the rows of the transactions that
// had not ended in the snapshot of the previous catch-up, that is at or
// above its xmax or in its list of transactions in progress. A row whose id
// was allocated before another's but whose transaction commits later is
// never skipped, and a transaction left open anywhere on the server does not
// make a catch-up re-read what was published since it began. A catch-up
// reads in pages of a bounded number of rows, each its own statement, and
// handles the notifications that arrive between pages (those of messages it
// has already passed; it reads the others itself, in order). Wake-ups that have
// already arrived are coalesced into one catch-up ([Stats].LogReads). The
// catch-up is also the health check; when it or the connection fails the
// listener reconnects with exponential backoff and jitter, LISTENs again,
// calls every subscription's [SubscribeOpts.OnResync], and delivers what it
// missed from the log (a catch-up cut by the failure resumes where it
// stopped).
//
// # Guarantees
//
//   - Exactly once per subscription: a message committed after Subscribe
//     returned (and after Start) is delivered to it once, whether it was found
//     through a notification, a poll, a catch-up after reconnect, or the
//     publisher's local delivery. Messages are deduplicated by id.
//   - Nothing before Start: a message committed before this instance's first
//     Start is never delivered to it. Catch-up covers reconnection gaps, not
//     history. A new PubSub is a new instance in this sense, also with the
//     same InstanceID (a restarted process, or an app built again after its
//     Start failed). Publishing works before Start.
//   - Transactions: PublishTx delivers if and only if the transaction commits,
//     and only after the commit.
//   - Durability: an autocommit Publish commits with synchronous_commit off
//     (its own transaction only), so a server crash may lose the last
//     acknowledged Publish calls (at most about 3 × wal_writer_delay), even
//     delivered ones; PublishTx has the caller's transaction's durability.
//     Messages committed after the crash are still delivered exactly once
//     (see the failure model below).
//   - Order: messages from one publisher that publishes sequentially are
//     delivered in commit order (a catch-up orders by transaction id, then
//     id). While a catch-up of several pages (500 messages each) is under
//     way, a message arriving by notification that the catch-up has not
//     reached yet is left to it, so it never overtakes older ones; it is
//     then delivered when the catch-up reaches it, also when it committed
//     after the catch-up began or the connection is lost before that
//     (TestOrderAcrossCatchUpPages).
//     Messages of different publishers have no defined order.
//   - Payloads: any JSON value round-trips byte for byte, including the
//     \u0000 escape (the column is json, not jsonb). [Config.MaxPayloadBytes]
//     (1 MiB by default) caps a payload: above it Publish returns
//     [ErrPayloadTooLarge] and nothing is written.
//   - Isolation: apps on one database never see each other's messages.
//   - Slow handlers: each subscription has its own goroutine and a bounded
//     buffer. A slow handler delays only its own subscription; when its buffer
//     is full, further messages are dropped from memory (counted in
//     [Stats].Dropped and logged) and read back from the log once the handler
//     catches up, after OnResync. Only their ids (8 bytes each) are kept
//     meanwhile.
//   - Debounce: trailing edge per subscription and payload.
//   - Close: after [PubSub.Close] returns nil no handler runs, including
//     pending debounced calls, except the handler Close was called from:
//     Close (and [SyncMessages.Close]) may be called from a handler; it
//     stops everything else and returns, and that handler finishes on its
//     own.
//
// # Failure model
//
// The table of faults (connection cut, server restart, failover, switchover,
// long transaction, full NOTIFY queue, slow handler, SIGKILL, silent
// partition), with the guarantee, the signal and the test of each, is
// docs/failure-model.md. In short:
//
// While the listener is disconnected ([PubSub.Healthy] is false) messages are
// delayed, not lost: they are delivered after the reconnection, after
// OnResync. A message older than [Config.Retention] is pruned from the log
// (by one instance of the app at a time), so an instance disconnected for
// longer than Retention, or a subscription whose handler stays blocked for
// longer, can miss messages; [Stats].Lost counts the latter. Retention
// counts from the commit: the pruner deletes only rows of transactions that
// had ended in a snapshot it recorded more than Retention ago (a marker row
// in the log), so a PublishTx in a transaction open longer than Retention
// is kept until connected listeners have read it, and a transaction left
// open elsewhere holds back no other rows. A row is pruned between
// Retention and about Retention*17/16 + PruneInterval after its commit; a
// log is not pruned during the first Retention after this version first
// runs on it. Handler errors
// and panics are logged with the channel and payload size, counted in
// [Stats].HandlerErrors, and never stop delivery; they are not retried.
// The log is a logged (durable) table, so a PostgreSQL crash loses only
// transactions that had not committed.
//
// A transaction left open anywhere on the server (a batch job, a
// migration, a forgotten session) holds the snapshot xmin back; it changes
// neither what a catch-up reads (what was published since the previous one)
// nor the ids kept in memory (those of messages whose transactions had not
// ended at the latest catch-up), so delivery is not delayed
// (TestLongTransactionBigBacklog).
//
// Every read of the log also checks that the server is the one the
// watermark came from: the same system_identifier (pg_control_system), and a
// snapshot xmin not below the watermark. A blue/green or
// logical-replication switchover, a restore from a dump or to an earlier
// point in time, a failover that lost committed transactions, or a DNS name
// moved to another server fails that check. The listener then reconnects
// (so [PubSub.Epoch] advances and every subscription gets OnResync), counts
// it in [Stats].Switchovers, logs a WARN with the reason, restarts its
// watermark from the new server, and delivers every message of the new
// server's log published since its last read of the old one (less 5 s):
// exactly-once is void for those (a message may come twice), and a message
// committed on the old server after that read that the new server does not
// have is lost. A failover to a physical replica keeps the
// system_identifier and the transaction ids, and is an ordinary reconnection.
//
// A crash (or a failover) may lose commits that were not yet flushed (or
// replicated), autocommit Publishes above all, and the server then hands out
// their transaction ids and message ids again, possibly past the watermark
// before the listener reconnects. So a reconnection that finds a new
// pg_postmaster_start_time looks for the last row the ledger saw: when it is
// still there, the WAL up to its commit survived, and the listener reads the
// log again from that row (exactly once); when it is gone, it is handled as
// a switchover (above).
//
// Behind PgBouncer in transaction mode LISTEN does not work: the listener
// needs a direct session connection.
//
// Differences from NocoBase: Publish defaults to skipping the publisher (the
// cluster guide's skipSelf), subscribing the same function twice yields two
// handles (Go has no function identity), debounce keys on subscription and
// payload (NocoBase shares one debounced call between subscribers), and
// publishing works whether or not this instance is started.
package listen
