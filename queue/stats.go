package queue

import (
	"context"
	"fmt"
)

// ChannelStats counts a channel's messages by state, as River's river_job
// table holds them. Finished messages count until River's job cleaner
// removes them (completed and cancelled after 24 h, discarded after 7 days).
type ChannelStats struct {
	// Queued messages wait to run (available, scheduled for later, or waiting
	// for a retry).
	Queued int64
	// Running messages are being processed by some instance.
	Running int64
	// Completed messages were processed successfully.
	Completed int64
	// Retried messages had at least one failed attempt, whatever their state.
	Retried int64
	// Discarded messages failed their last allowed attempt (dead letters:
	// their errors stay in river_job.errors).
	Discarded int64
	// Cancelled messages were cancelled with [EventQueue.Cancel].
	Cancelled int64
}

// Stats returns the counts of every channel this instance subscribes, keyed
// by channel, in one query.
func (q *EventQueue) Stats(ctx context.Context) (map[string]ChannelStats, error) {
	if err := q.checkOpen(); err != nil {
		return nil, err
	}
	q.subsMu.RLock()
	channelOf := make(map[string]string, len(q.byQueue))
	queues := make([]string, 0, len(q.byQueue))
	for name, sub := range q.byQueue {
		channelOf[name] = sub.channel
		queues = append(queues, name)
	}
	q.subsMu.RUnlock()

	out := make(map[string]ChannelStats, len(queues))
	for _, ch := range channelOf {
		out[ch] = ChannelStats{}
	}
	if len(queues) == 0 {
		return out, nil
	}
	rows, err := q.pool.Query(ctx, `
		SELECT queue,
			count(*) FILTER (WHERE state IN ('available', 'scheduled', 'retryable', 'pending')),
			count(*) FILTER (WHERE state = 'running'),
			count(*) FILTER (WHERE state = 'completed'),
			count(*) FILTER (WHERE coalesce(cardinality(errors), 0) > 0),
			count(*) FILTER (WHERE state = 'discarded'),
			count(*) FILTER (WHERE state = 'cancelled')
		FROM `+q.jobTable+`
		WHERE queue = ANY($1) AND kind = $2
		GROUP BY queue`, queues, messageKind)
	if err != nil {
		return nil, fmt.Errorf("queue: stats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var s ChannelStats
		if err := rows.Scan(&name, &s.Queued, &s.Running, &s.Completed, &s.Retried, &s.Discarded, &s.Cancelled); err != nil {
			return nil, fmt.Errorf("queue: stats: %w", err)
		}
		out[channelOf[name]] = s
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("queue: stats: %w", err)
	}
	return out, nil
}
