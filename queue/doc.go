// Package queue is NocoBase's EventQueue rebuilt on River
// (github.com/riverqueue/river) in PostgreSQL: a durable work queue with
// competing consumers, where each message is processed by one instance at a
// time, and messages survive the stop or crash of every instance.
//
// Each instance creates one [EventQueue] ([New]) over its pool, which runs
// one River client whose tables live in Config.Schema (installed by the
// migrations package). A channel maps to one River queue; River does the
// claiming (UPDATE … FOR UPDATE SKIP LOCKED), retries, timeouts, rescue of
// crashed workers, cancellation and cleanup. This package adds NocoBase's
// model on top: channels namespaced by app, [Consumer.Idle] gating,
// per-message timeout and retry options, and NocoBase's defaults.
//
//	q, _ := queue.New(pool, &queue.Config{AppName: "main"})
//	q.Subscribe("async-task-manager.task", queue.Consumer{Concurrency: 3, Idle: monitor.Idle, Process: run})
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
//     by a Stop past its deadline, or its worker died.
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
//     after Config.RetryBackoff while PublishOpts.MaxRetries allows: MaxRetries
//     3 means at most 4 calls. Then the message is discarded and kept, with
//     every attempt's error, in river_job (state discarded) as a dead letter
//     ([EventQueue.Inspect] reads it).
//     Attempts lost to a dead worker are not failures: such a message is
//     retried up to Config.MaxRescues more times.
//   - Cancel: [EventQueue.Cancel] from any instance stops a queued message
//     from ever running and cancels a running one's ctx.
//   - Ordering: messages of a channel are claimed in publish order (FIFO,
//     like NocoBase); with Concurrency > 1 or several instances they run
//     concurrently, and a retry is ordered by the time it becomes due, behind
//     the messages already waiting then.
//
// # Failure model
//
// A message whose instance dies (SIGKILL, power loss, network partition)
// stays running in the database until River's rescuer, which runs every
// 30 s on the elected leader instance, finds it older than Config.RescueAfter
// and past its own timeout; it is then retried by any subscriber. An instance
// that is alive but stuck past RescueAfter may therefore see its message run
// a second time elsewhere: keep RescueAfter above the longest Process you
// expect, and make Process idempotent where duplicates matter. [EventQueue.Stop]
// waits for running messages while the database is still open (NocoBase
// closes the database first); at its ctx's deadline it cancels their
// contexts, and River puts them back in the queue without charging an
// attempt. A Process that ignores its ctx is abandoned [StopGrace]/2 later:
// its message is handed back to the queue at once (available, not charged)
// and its late result dropped, so Stop returns at most StopGrace (2 s) after
// its ctx ends. Database outages stall claiming and completion; River
// retries its queries and reconnects its LISTEN connection.
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
//   - Concurrency 0 means unlimited (River's maximum, 10,000) as in NocoBase,
//     but NocoBase's default of 1 cannot be a Go zero value: set it.
//   - A second Subscribe of a channel is an error ([ErrAlreadySubscribed]),
//     not a warning; the first stays.
//   - Publish works before Start (the message waits) and without a local
//     subscription; for a Shared channel without a local subscription say
//     PublishOpts.Shared.
//   - Retries wait Config.RetryBackoff (500 ms, as NocoBase) and then the next
//     claim (at most PollInterval later), and they keep the message's id and
//     options; NocoBase re-publishes a new message and drops custom options.
//
// River's tables are pgcoord's own: do not run other River clients in
// Config.Schema (River's leader would rescue and discard their jobs, whose
// kinds it does not know, and theirs ours).
package queue
