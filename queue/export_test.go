package queue

import (
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
)

// NewWithClock is New on an instance whose wall clock is clock (for River
// too): a machine whose clock is off.
func NewWithClock(pool *pgxpool.Pool, cfg *Config, clock func() time.Time) (*EventQueue, error) {
	return newQueue(pool, cfg, clock)
}

// JobEvents subscribes to this instance's River events of kinds (River sends
// a completion after its state is written).
func (q *EventQueue) JobEvents(kinds ...river.EventKind) (<-chan *river.Event, func()) {
	return q.client.Subscribe(kinds...)
}

// RescueScans counts the rescue scans this instance ran as the rescuer.
func (q *EventQueue) RescueScans() int64 { return q.rescueScans.Load() }

// JobScans counts the rescue scans that read River's job table.
func (q *EventQueue) JobScans() int64 { return q.jobScans.Load() }

// Rescuing is closed when this instance first becomes the rescuer.
func (q *EventQueue) Rescuing() <-chan struct{} { return q.rescuing }

// HashedQueueName is the queue name every channel had before readable
// names (migration 12), and non-readable channels still have.
func HashedQueueName(app, channel string, shared bool) string {
	return hashedQueueName(app, channel, shared)
}

// Scanned returns this instance's rescue scan count and a channel closed
// at its next scan.
func (q *EventQueue) Scanned() (int64, <-chan struct{}) {
	q.scanMu.Lock()
	defer q.scanMu.Unlock()
	return q.rescueScans.Load(), q.scanned
}
