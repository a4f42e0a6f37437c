package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/riverqueue/river"
)

// MessageStatus is a stored message and where it stands, as returned by
// [EventQueue.Inspect]: the way to read a dead letter (State "discarded")
// and the error of each failed attempt.
type MessageStatus struct {
	ID      int64
	Channel string
	Payload json.RawMessage
	// State is River's job state: "available", "scheduled", "pending",
	// "running", "retryable" (waiting for its retry), "completed",
	// "discarded" (out of retries) or "cancelled".
	State string
	// Attempts is how many times it was claimed (including attempts lost to
	// a dead worker).
	Attempts int
	// Errors lists every failed or rescued attempt, oldest first.
	Errors []AttemptError
	// Options are the options it was published with.
	Options MessageOptions
	// FinalizedAt is when it completed, was discarded or cancelled; zero
	// while it is still to be processed.
	FinalizedAt time.Time
}

// AttemptError is the error of one attempt.
type AttemptError struct {
	At      time.Time
	Attempt int
	Error   string
}

// Inspect returns message id's status. Finished messages can be inspected
// until River's job cleaner removes them (completed and cancelled after 24 h,
// discarded after 7 days); an unknown id returns ErrNotFound.
func (q *EventQueue) Inspect(ctx context.Context, id int64) (*MessageStatus, error) {
	if err := q.checkOpen(); err != nil {
		return nil, err
	}
	job, err := q.client.JobGet(ctx, id)
	if errors.Is(err, river.ErrNotFound) || (err == nil && job.Kind != messageKind) {
		return nil, fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("queue: inspect %d: %w", id, err)
	}
	var args messageArgs
	if err := json.Unmarshal(job.EncodedArgs, &args); err != nil {
		return nil, fmt.Errorf("queue: inspect %d: decode: %w", id, err)
	}
	st := &MessageStatus{
		ID:       job.ID,
		Channel:  args.Channel,
		Payload:  args.payload(),
		State:    string(job.State),
		Attempts: job.Attempt,
		Options:  args.options(job.CreatedAt),
	}
	if job.FinalizedAt != nil {
		st.FinalizedAt = *job.FinalizedAt
	}
	for _, e := range job.Errors {
		st.Errors = append(st.Errors, AttemptError{At: e.At, Attempt: e.Attempt, Error: e.Error})
	}
	return st, nil
}
