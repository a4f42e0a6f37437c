package queue

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// messageKind is the River job kind of every message; the channel is the
// River queue, so one worker serves every channel.
const messageKind = "pgcoord.queue.message"

// rescuedError is the error River's rescuer records on a message whose
// worker stopped answering (the process died). Such attempts are not
// counted as failures.
const rescuedError = "Stuck job rescued by JobRescuer"

// messageArgs is a message as stored in river_job.args (jsonb), readable by
// River's tools and by SQL: args->'payload'->>'x'.
type messageArgs struct {
	Channel string `json:"channel"`
	// Payload is the published JSON value itself (not a string holding
	// it), as jsonb keeps it: same value, but key order, duplicate keys
	// and whitespace are not kept.
	Payload json.RawMessage `json:"payload,omitempty"`
	// PayloadText holds, instead of Payload, a payload jsonb cannot hold
	// (a \u0000 escape), as its exact JSON text.
	PayloadText string `json:"payload_text,omitempty"`
	// TimeoutMS and MaxRetries are left out at the package defaults
	// (DefaultTimeout, 0): every state change of a job rewrites its row and
	// its args index entries, and a message published with default options
	// is the common one. Absent means the package default, never the
	// consuming instance's Config.
	TimeoutMS  int64  `json:"timeout_ms,omitempty"`
	MaxRetries int    `json:"max_retries,omitempty"`
	UniqueKey  string `json:"unique_key,omitempty" river:"unique"`
}

// timeoutMS returns the stored timeout_ms of a message whose attempts time
// out after d: none (0) for DefaultTimeout, at least 1 ms otherwise.
func timeoutMS(d time.Duration) int64 {
	if d == DefaultTimeout {
		return 0
	}
	return max(d.Milliseconds(), 1)
}

// timeout is the message's processing timeout.
func (a *messageArgs) timeout() time.Duration {
	if a.TimeoutMS == 0 {
		return DefaultTimeout
	}
	return time.Duration(a.TimeoutMS) * time.Millisecond
}

// options returns the message's resolved options; publishedAt is the job's
// created_at.
func (a *messageArgs) options(publishedAt time.Time) MessageOptions {
	return MessageOptions{Timeout: a.timeout(), MaxRetries: a.MaxRetries, UniqueKey: a.UniqueKey, PublishedAt: publishedAt}
}

// payload returns the message's JSON as the consumer sees it: compact.
func (a *messageArgs) payload() json.RawMessage {
	if a.Payload == nil {
		return json.RawMessage(a.PayloadText)
	}
	var b bytes.Buffer
	if json.Compact(&b, a.Payload) != nil {
		return a.Payload
	}
	return b.Bytes()
}

func (messageArgs) Kind() string { return messageKind }

type worker struct {
	river.WorkerDefaults[messageArgs]
	q *EventQueue
}

func (w *worker) Timeout(job *river.Job[messageArgs]) time.Duration {
	return job.Args.timeout()
}

func (w *worker) Work(ctx context.Context, job *river.Job[messageArgs]) error {
	q := w.q
	sub := q.lookup(job.Queue)
	if sub == nil {
		// Unsubscribe keeps the subscription until River's producer for the
		// queue stopped, so this is defensive: hand the message back at once
		// without charging an attempt.
		return river.JobSnooze(0)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer q.startRunning(job.ID, job.Attempt, cancel)()
	failed := failedAttempts(job.JobRow)
	msg := Message{
		ID:      job.ID,
		Channel: job.Args.Channel,
		Payload: job.Args.payload(),
		Retried: failed,
		Options: job.Args.options(job.CreatedAt),
	}
	tel := q.otel.channel(msg.Channel)
	q.otel.started.Add(ctx, 1, tel.process)
	begin := time.Now()
	err := sub.process(ctx, msg)
	q.otel.process.Record(ctx, time.Since(begin).Seconds(), tel.process)
	if err == nil && !errors.Is(context.Cause(ctx), river.ErrJobCancelledRemotely) {
		q.otel.completed.Add(ctx, 1, tel.process)
		return nil
	}
	attrs := []any{slog.String("channel", msg.Channel), slog.Int64("message_id", job.ID), slog.Int("attempt", job.Attempt)}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	if ctx.Err() != nil {
		cause := context.Cause(ctx)
		switch {
		case errors.Is(cause, ErrLivenessLost):
			// This instance may be seen dead: hand the message back,
			// not charged. The write is fenced (setOutcomes): if another
			// instance took the message meanwhile, it is dropped.
			q.logger.WarnContext(ctx, "queue: message interrupted: liveness session lost; requeued", attrs...)
			return river.JobSnooze(0)
		case errors.Is(cause, river.ErrJobCancelledRemotely):
			// Cancelled ends cancelled whatever Process returned, nil
			// included (it noticed the cancel and stopped early).
			q.logger.InfoContext(ctx, "queue: message cancelled", attrs...)
			q.otel.cancelled.Add(ctx, 1, tel.process)
			return river.JobCancel(cmp.Or(err, cause))
		case !errors.Is(cause, context.DeadlineExceeded):
			// The instance is stopping and its grace period ran out. Returning
			// the context's error lets River put the message back without
			// charging the attempt, whatever Process returned.
			q.logger.InfoContext(ctx, "queue: message interrupted by stop; requeued", attrs...)
			return ctx.Err()
		}
	}
	q.otel.failed.Add(ctx, 1, tel.process)
	if failed+1 > job.Args.MaxRetries {
		q.logger.ErrorContext(ctx, "queue: message failed and is out of retries; discarded", attrs...)
		q.otel.discarded.Add(ctx, 1, tel.process)
		// River's max_attempts also budgets MaxRescues attempts lost to dead
		// workers, so River alone would retry. Lowering the limit on the row
		// River's executor holds for this attempt makes it record the failure
		// as discarded (state discarded, errors kept) in the same write. The
		// row is this attempt's own copy; TestRetriesExhaustedDiscards guards
		// this against River changes.
		job.MaxAttempts = job.Attempt
		return err
	}
	q.logger.WarnContext(ctx, "queue: message failed; will retry", attrs...)
	q.otel.retried.Add(ctx, 1, tel.process)
	return err
}

// process calls the consumer, turning a panic into a failed attempt.
func (s *subscription) process(ctx context.Context, msg Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: string(debug.Stack())}
		}
	}()
	return s.consumer.Process(ctx, msg)
}

// failedAttempts counts the attempts that failed in Process (errors River
// recorded, except its rescuer's).
func failedAttempts(job *rivertype.JobRow) int {
	n := 0
	for _, e := range job.Errors {
		if e.Error != rescuedError {
			n++
		}
	}
	return n
}
