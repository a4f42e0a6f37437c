// Package queue is NocoBase's EventQueue rebuilt on River
// (github.com/riverqueue/river) in PostgreSQL: a durable work queue with
// competing consumers, where each message is processed by one instance at a
// time, and messages survive the stop or crash of every instance.
//
// Each instance creates one [EventQueue] ([New]) over its pool, which runs
// one River client whose tables live in Config.Schema (installed by the
// migrations package). A channel maps to one River queue; River does the
// claiming (UPDATE … FOR UPDATE SKIP LOCKED), retries, timeouts,
// cancellation and cleanup. This package adds NocoBase's model on top:
// channels namespaced by app, [Consumer.Idle] gating, per-message timeout and
// retry options, NocoBase's defaults, and rescue of dead instances' messages
// by liveness instead of River's age-based rescuer.
//
//	q, _ := queue.New(pool, &queue.Config{AppName: "main"})
//	q.Subscribe(ctx, "async-task-manager.task", queue.Consumer{Concurrency: 3, Idle: monitor.Idle, Process: run})
//	q.Start(ctx)
//	id, _ := q.PublishTx(ctx, tx, "async-task-manager.task", task, &queue.PublishOpts{MaxRetries: 2})
//	…
//	q.Stop(ctx)
//
// # Guarantees
//
//   - Durable: a message is a row of river_job from the moment [EventQueue.Publish]
//     returns (or [EventQueue.PublishTx]'s transaction commits; it is gone if
//     that rolls back). Stopping or killing every instance loses nothing:
//     the next instance that subscribes the channel processes it.
//   - One at a time: a message is claimed by one instance; another attempt
//     starts only after the previous one failed, timed out, was interrupted
//     or abandoned by a Stop past its deadline, or its instance died. A
//     message whose instance is alive is never run a second time, however
//     long it runs.
//   - Only subscribers consume: an instance processes only the channels it
//     subscribed; any instance may publish to any channel (NocoBase's
//     WORKER_MODE split; NocoBase requires the publisher to subscribe).
//   - Idle: while [Consumer.Idle] returns false this instance claims nothing
//     of the channel. The check runs right before each claim, so a message is
//     never claimed, charged an attempt, or hidden from other instances
//     because of Idle. (Snoozing claimed messages was rejected: the idle
//     instance would re-claim the same messages in a loop and delay them for
//     everyone.)
//   - Retries: a failed attempt (an error, a panic, or the timeout) is retried
//     after Config.RetryBackoff (of database time) while PublishOpts.MaxRetries allows: MaxRetries
//     3 means at most 4 calls. Then the message is discarded and kept, with
//     every attempt's error, in river_job (state discarded) as a dead letter
//     ([EventQueue.Inspect] reads it).
//     Attempts lost to a dead worker are not failures: such a message is
//     retried up to Config.MaxRescues more times. So River's max_attempts
//     is MaxRetries + 1 + MaxRescues: a message published with the default
//     MaxRetries 0 shows max_attempts 4 in river_job, yet its first failure
//     discards it; the other 3 attempts are reserved for rescues
//     (args->>'max_retries' holds MaxRetries; absent means 0).
//   - Cancel: [EventQueue.Cancel] from any instance stops a queued message
//     from ever running and cancels a running one's ctx.
//   - Ordering: messages of a channel are claimed in publish order (FIFO,
//     like NocoBase); with Concurrency > 1 or several instances they run
//     concurrently, and a retry is ordered by the time it becomes due, behind
//     the messages already waiting then.
//
// # Failure model
//
// The database's clock and its view of which sessions live decide; no
// instance's wall clock does. docs/failure-model.md has the fault table.
//
// Liveness: [EventQueue.Start] opens a liveness session, one dedicated
// connection holding a session advisory lock named after Config.InstanceID
// (the id River records in attempted_by; two running instances with one id
// are refused, [ErrInstanceIDInUse]). An instance claims messages only while
// its session is up. One instance at a time, the rescuer (elected by another
// advisory lock on its liveness session), looks every [RescueScanInterval]
// for running messages whose instance holds no liveness lock, and hands back
// those seen so for [RescueGrace]: available at once (or discarded when out of
// attempts, cancelled if a Cancel is pending), the lost attempt charged to
// Config.MaxRescues, never to MaxRetries. The liveness check is repeated in
// the handing-back statement itself. A look reads River's job table only when
// an instance may have died since the previous look (an advisory lock of the
// database was released; one pg_locks read tells), while a message waits out
// its grace, and every tenth look: an instance that dies releases its lock,
// so the bound is unchanged and a quiet cluster does not walk the running
// messages twice a second.
//
//   - SIGKILL, power loss: PostgreSQL ends the dead instance's session when
//     its socket closes; its messages run again on another subscriber within
//     [RescueBound] (4 s) plus a claim: SIGKILL to the rerun's start
//     measured 2.5 to 3.1 s, median 2.9 s, over 6 runs under -race with
//     the earlier 2 s RescueGrace; the 3 s grace (more room for a live
//     instance's reconnect on a loaded machine) adds one second
//     (TestCrashedWorkerMessageIsRescued).
//   - Silent partition: the server ends the partitioned backend within
//     about 4 s (TCP keepalives and tcp_user_timeout set on the session);
//     the rescue follows within RescueBound. The partitioned instance notices
//     its session lost within 2.25 s (a ping every 250 ms, 2 s timeout),
//     stops claiming, and from then on writes an outcome only if its row is
//     still its own attempt (checked under a row lock), so a late result
//     never overwrites a rerun. A session lost for [CancelAfterLoss] more
//     cancels the ctx of every Process running on the instance (cause
//     [ErrLivenessLost]), at least 3 s before another instance may rerun
//     the message; the message goes back to the queue uncharged unless it
//     was handed on meanwhile. A Process that ignores its ctx may still
//     overlap with the rerun.
//   - Connection cut, server restart: the session reconnects (backoff up to
//     500 ms) well within RescueGrace, so no live instance's message is
//     rerun (a session back within CancelAfterLoss cancels nothing; a
//     slower one cancels the running Process ctx as above). A restart longer than that is harmless too: the rescuer needs
//     the server. One gap: an outcome River cannot write within its
//     completer's retries (an outage of tens of seconds as the message
//     ends) is lost, and the message stays running until its instance
//     stops; then it runs again.
//   - Clock skew: River's rescuer (which compares its leader's clock with
//     attempted_at) is disabled; PublishOpts.Delay, retry times, River's
//     interrupted and snoozed times, and its scheduler's look-ahead are
//     moved to the database's clock (keeping their distance from now)
//     before they reach SQL.
//
// Config.RescueAfter is ignored: age is no sign of death. A Process that
// hangs on a live instance keeps its message until it returns (its ctx is
// cancelled at the timeout), or until Stop abandons it. [EventQueue.Stop]
// waits for running messages while the database is still open (NocoBase
// closes the database first); at its ctx's deadline it cancels their
// contexts, and River puts them back in the queue without charging an
// attempt. A Process that ignores its ctx is abandoned [StopGrace]/2 later:
// its message is handed back to the queue at once (available, not charged)
// and its late result dropped, so Stop returns at most StopGrace (2 s) after
// its ctx ends; the liveness session closes last. Database outages stall
// claiming and completion; River retries its queries and reconnects its
// LISTEN connection.
//
// # Defaults and the latency/throughput trade-off
//
// River's fetch settings trade database load for latency and throughput:
//
//   - FetchCooldown is the minimum time between two claims of a queue by one
//     instance. Each claim takes up to the free worker slots, so
//     Concurrency / FetchCooldown caps throughput (River's 100 ms default caps
//     100 workers at about 1,000 messages/s), and a message arriving during
//     the cooldown waits for its end. At client level it also debounces the
//     NOTIFY sent on insert: River sends at most one per queue per cooldown,
//     and a message published inside that window is only found by the next
//     poll, which is why River's defaults give back-to-back messages about
//     100 ms of latency.
//   - FetchPollInterval is how long a consumer waits between claims when no
//     NOTIFY woke it: the cost of an idle channel (one cheap indexed query per
//     interval per instance) and the latency of anything that arrives without
//     a NOTIFY (a retry's backoff ending, Idle turning true, a missed NOTIFY).
//
// pgcoord's defaults: the insert NOTIFY debounce is River's minimum, 1 ms, so
// every message publication wakes the consumers (at most 1,000 NOTIFYs per
// second per channel per publishing instance; NOTIFY takes a global lock at
// commit, which is the price). Each channel's FetchCooldown is derived from
// its Concurrency: 20 µs per worker, at least 1 ms and at most 20 ms (a cap
// near 50,000 messages/s per channel per instance, with fewer, bigger claims
// for many workers), never above its PollInterval. PollInterval defaults to
// River's 1 s, so an idle database sees one query per second per channel per
// instance, as with River; NocoBase polls every 250 ms. Config.FetchCooldown
// overrides the derived value for every channel.
//
// # Differences from NocoBase
//
//   - Concurrency defaults to 1, as in NocoBase ([DefaultConcurrency]); say
//     [MaxConcurrency] for River's maximum (10,000). (Before, 0 meant 10,000.)
//   - A second Subscribe of a channel is an error ([ErrAlreadySubscribed]),
//     not a warning; the first stays.
//   - Publish works before Start (the message waits) and without a local
//     subscription; for a Shared channel without a local subscription say
//     PublishOpts.Shared.
//   - Retries wait Config.RetryBackoff (500 ms, as NocoBase) and then the next
//     claim (at most PollInterval later), and they keep the message's id and
//     options; NocoBase re-publishes a new message and drops custom options.
//
// # Reading messages with River's tools
//
// A message is a River job that River UI, River's CLI and plain SQL read
// naturally. Its queue is named after the channel: "<app>-<channel>" (e.g.
// main-send_email), or the channel itself for a Shared consumer, whenever
// the channel is a valid River queue name (lower-case letters and digits
// separated by single underscores or hyphens, short enough); other channels
// (dots, capitals, unicode) get a sanitized prefix and a hash. river_job.args
// holds {"channel", "payload", "timeout_ms", "max_retries", "unique_key"},
// the payload as a JSON value, so SQL can filter on it. An option at its
// package default is left out (timeout_ms absent means [DefaultTimeout],
// max_retries absent means 0): a message published with default options is
// {"channel", "payload"}, a smaller row to rewrite at every state change.
//
//	SELECT id, state FROM pgcoord.river_job WHERE args->'payload'->>'user_id' = '42'
//
// The price: the payload a consumer receives is the same JSON value, not
// the same bytes (jsonb orders keys and keeps the last of duplicate keys;
// numbers keep every digit). A payload with a \u0000 escape, which jsonb
// cannot hold, is stored as its exact text under args.payload_text and
// received byte for byte. Migration 12 converted messages stored before.
//
// River's tables are pgcoord's own: do not run other River clients in
// Config.Schema (River's leader would rescue and discard their jobs, whose
// kinds it does not know, and theirs ours).
package queue
