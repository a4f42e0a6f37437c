package queue

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/pgcoord/pgcoord/internal/liveness"
)

const (
	// RescueScanInterval is how often the rescuer (one instance of the
	// cluster at a time) looks for running messages whose instance is dead.
	RescueScanInterval = 500 * time.Millisecond
	// RescueGrace is how long an instance's liveness session must stay gone
	// before its running messages are handed back: it covers a reconnect
	// after a cut connection or a server restart, so those never cause a
	// second run of a live instance's message.
	RescueGrace = 3 * time.Second
	// RescueBound is the longest a dead instance's running message stays
	// running once the database has ended the instance's session (at once
	// for a killed process, within liveness.ServerDetect for a silent
	// partition): a scan to see it, RescueGrace, a scan to hand it back.
	RescueBound = RescueGrace + 2*RescueScanInterval
	// CancelAfterLoss is how long this instance's liveness session must stay
	// lost before the ctx of every Process running here is cancelled
	// ([ErrLivenessLost]). A silent partition is noticed within
	// liveness.CheckInterval + liveness.PingTimeout (2.25 s), so Process is
	// cancelled within 3.75 s of its start, while the database ends the
	// partitioned session only after about 4 s and a rescue follows
	// RescueGrace (3 s) later. A cut connection is noticed within 250 ms:
	// the cancel comes at least 1.25 s before the earliest rescue.
	CancelAfterLoss = RescueGrace / 2
	// rescueBatch bounds the messages one scan hands back.
	rescueBatch = 1000
	// jobScanEvery is how many rescue scans may skip the job table in a row
	// (see heldKeysSQL). It also bounds the one case the pg_locks check
	// misses: an instance whose liveness lock was taken and released
	// between two scans (it lived under RescueScanInterval, claimed a
	// message and died) is rescued within jobScanEvery scans plus
	// RescueGrace, not RescueBound.
	jobScanEvery = 10
)

// heldKeysSQL lists the advisory locks held in the current database. An
// instance dies for the rescuer when its liveness lock is released, so while
// no lock held at the previous scan was released, no instance can have died
// since, and the scan need not read the job table (whose running part every
// claim and completion rewrites).
const heldKeysSQL = `
	SELECT (l.classid::bigint << 32) | l.objid::bigint FROM pg_locks l
	WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
		AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`

// claim is what this instance knows of a message it claimed, until River
// has written the attempt's outcome.
type claim struct {
	attempt int
	// epoch is the liveness epoch the message was claimed in. If the
	// session was lost since, the message may have been handed back, so its
	// outcome is written only if the row is still this attempt's.
	epoch uint64
}

// rescueQueries builds the rescuer's statements for schema.
func rescueQueries(schema string) (candidates, rescue, fence string) {
	job := pgx.Identifier{schema, "river_job"}.Sanitize()
	state := pgx.Identifier{schema, "river_job_state"}.Sanitize()
	owner := `j.attempted_by[cardinality(j.attempted_by)]`
	dead := `NOT ` + liveness.HeldExpr(`$2::text`, owner)
	candidates = `
		SELECT j.id, j.attempt FROM ` + job + ` AS j
		WHERE j.state = 'running' AND j.kind = $1 AND ` + dead + `
		ORDER BY j.id LIMIT ` + fmt.Sprint(rescueBatch)
	// The liveness check is repeated in the UPDATE: an instance whose
	// session came back meanwhile keeps its message. A rescue is River's:
	// the attempt stays charged to MaxRescues (the error marks it rescued,
	// so it is no failed attempt), available at once, or discarded when
	// out of attempts, or cancelled when a Cancel is pending.
	rescue = `
		WITH input AS (
			SELECT unnest($3::bigint[]) AS id, unnest($4::int[]) AS attempt
		), moved AS (
			UPDATE ` + job + ` AS j SET
				state = CASE WHEN j.metadata ? 'cancel_attempted_at' THEN 'cancelled'
					WHEN j.attempt >= j.max_attempts THEN 'discarded' ELSE 'available' END::` + state + `,
				finalized_at = CASE WHEN j.metadata ? 'cancel_attempted_at' OR j.attempt >= j.max_attempts THEN now() END,
				scheduled_at = CASE WHEN j.metadata ? 'cancel_attempted_at' OR j.attempt >= j.max_attempts THEN j.scheduled_at ELSE now() END,
				errors = array_append(j.errors, jsonb_build_object('at', now(), 'attempt', j.attempt, 'error', $5::text, 'trace', ''))
			FROM input
			WHERE j.id = input.id AND j.attempt = input.attempt AND j.state = 'running' AND j.kind = $1 AND ` + dead + `
			RETURNING j.queue, j.state
		)
		SELECT pg_notify($6, json_build_object('queue', queue)::text)
		FROM (SELECT DISTINCT queue FROM moved WHERE state = 'available') AS woken`
	// fence locks the rows still running the given attempt on this
	// instance: a concurrent rescue waits for the outcome write, and a row
	// already handed back is left out.
	fence = `
		SELECT j.id FROM ` + job + ` AS j
		JOIN (SELECT unnest($1::bigint[]) AS id, unnest($2::int[]) AS attempt) AS input ON input.id = j.id AND input.attempt = j.attempt
		WHERE j.state = 'running' AND ` + owner + ` = $3
		FOR UPDATE OF j`
	return candidates, rescue, fence
}

// runRescuer hands back the running messages of dead instances, while this
// instance holds the cluster's rescuer lock (on its liveness session: the
// lock moves to another instance when this one dies). It decides by
// liveness alone: no clock is compared; RescueGrace is measured with this
// process's monotonic clock.
func (q *EventQueue) runRescuer(ctx context.Context) {
	t := time.NewTicker(RescueScanInterval)
	defer t.Stop()
	var leaderEpoch uint64
	seen := make(map[claimKey]time.Time)
	// held is the advisory locks held at the previous scan (nil: unknown,
	// read the job table); skipped counts the scans since the last read.
	var held map[int64]bool
	skipped := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		epoch, live, _ := q.live.State()
		if !live {
			continue
		}
		if leaderEpoch != epoch {
			ok, e, err := q.live.TryLock(ctx, "rescuer")
			if err != nil || !ok {
				continue
			}
			if leaderEpoch == 0 {
				close(q.rescuing)
			}
			leaderEpoch = e
			clear(seen)
			held = nil
			q.logger.Info("queue: this instance rescues dead instances' messages", slog.String("instance_id", q.cfg.InstanceID))
		}
		// The locks are read before the job table: an instance that dies
		// after this read is either seen dead by this scan's job read or
		// missing from the next scan's locks.
		now, err := q.heldKeys(ctx)
		released := err != nil || held == nil || releasedAny(held, now)
		held = now
		if released || len(seen) > 0 || skipped+1 >= jobScanEvery {
			skipped = 0
			err = q.rescueOnce(ctx, seen)
		} else {
			skipped++
		}
		if err != nil && ctx.Err() == nil {
			q.logger.Warn("queue: rescue scan failed", slog.String("instance_id", q.cfg.InstanceID), slog.Any("error", err))
		}
		q.scanMu.Lock()
		q.rescueScans.Add(1)
		close(q.scanned)
		q.scanned = make(chan struct{})
		q.scanMu.Unlock()
	}
}

// heldKeys returns the advisory locks held in the database (heldKeysSQL);
// nil with the error when the read failed.
func (q *EventQueue) heldKeys(ctx context.Context) (map[int64]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rows, err := q.pool.Query(ctx, heldKeysSQL)
	if err != nil {
		return nil, err
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, err
	}
	held := make(map[int64]bool, len(keys))
	for _, k := range keys {
		held[k] = true
	}
	return held, nil
}

// releasedAny reports whether a key of before is missing from now.
func releasedAny(before, now map[int64]bool) bool {
	for k := range before {
		if !now[k] {
			return true
		}
	}
	return false
}

// watchLiveness cancels the ctx of every Process running on this instance
// (cause ErrLivenessLost) when the liveness session stays lost for
// CancelAfterLoss: from then on other instances may soon see this one dead
// and rerun its messages (RescueGrace after the database ended its
// session), and a Process should stop before that. A session that comes
// back sooner (a cut connection, a quick server restart) cancels nothing.
func (q *EventQueue) watchLiveness(ctx context.Context) {
	for {
		_, live, changed := q.live.State()
		if live {
			select {
			case <-ctx.Done():
				return
			case <-changed:
				continue
			}
		}
		timer := time.NewTimer(CancelAfterLoss)
		restored := false
		for !restored {
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-changed:
				_, live, changed = q.live.State()
				restored = live
				continue
			case <-timer.C:
			}
			break
		}
		timer.Stop()
		if restored {
			continue
		}
		if n := q.cancelRunning(ErrLivenessLost); n > 0 {
			q.logger.Warn("queue: liveness session lost; cancelled running messages, which may run elsewhere",
				slog.String("instance_id", q.cfg.InstanceID), slog.Int("messages", n))
		}
		// Wait for the session to come back before watching again.
		for !live {
			select {
			case <-ctx.Done():
				return
			case <-changed:
				_, live, changed = q.live.State()
			}
		}
	}
}

// cancelRunning cancels the ctx of every running Process with cause and
// returns how many it cancelled.
func (q *EventQueue) cancelRunning(cause error) int {
	q.runMu.Lock()
	defer q.runMu.Unlock()
	for _, r := range q.running {
		r.cancel(cause)
	}
	return len(q.running)
}

type claimKey struct {
	id      int64
	attempt int
}

func (q *EventQueue) rescueOnce(ctx context.Context, seen map[claimKey]time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	q.jobScans.Add(1)
	rows, err := q.pool.Query(ctx, q.candidatesSQL, messageKind, q.cfg.Schema)
	if err != nil {
		return err
	}
	now := time.Now()
	var ids []int64
	var attempts []int32
	current := make(map[claimKey]bool)
	for rows.Next() {
		var k claimKey
		if err := rows.Scan(&k.id, &k.attempt); err != nil {
			rows.Close()
			return err
		}
		current[k] = true
		first, ok := seen[k]
		if !ok {
			seen[k] = now
			continue
		}
		if now.Sub(first) >= RescueGrace {
			ids = append(ids, k.id)
			attempts = append(attempts, int32(k.attempt))
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for k := range seen {
		if !current[k] {
			delete(seen, k)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	if _, err := q.pool.Exec(ctx, q.rescueSQL, messageKind, q.cfg.Schema, ids, attempts, rescuedError, q.insertTopic); err != nil {
		return err
	}
	q.otel.rescued.Add(ctx, int64(len(ids)), q.otel.noChannel)
	q.logger.Warn("queue: handed back running messages of dead instances", slog.String("instance_id", q.cfg.InstanceID), slog.Int("messages", len(ids)))
	return nil
}

// recordClaims remembers the attempt and liveness epoch of claimed rows.
func (q *EventQueue) recordClaims(rows []*rivertype.JobRow, epoch uint64) {
	if len(rows) == 0 {
		return
	}
	q.runMu.Lock()
	defer q.runMu.Unlock()
	for _, r := range rows {
		q.claims[r.ID] = claim{attempt: r.Attempt, epoch: epoch}
	}
}

// setOutcomes writes attempts' outcomes (River's JobSetStateIfRunningMany)
// so that no instance clock and no stale attempt decides anything:
//   - results of messages Stop abandoned are dropped;
//   - scheduled_at (a retry, a snooze, an interruption: River computes it
//     from this instance's clock) is moved to the database clock, keeping
//     its distance from now;
//   - a message claimed in an older liveness epoch (the session was lost
//     since, so it may have been handed back and be running elsewhere) is
//     written only if its row is still this attempt's, under a row lock.
func (q *EventQueue) setOutcomes(ctx context.Context, exec riverdriver.Executor, params *riverdriver.JobSetStateIfRunningManyParams) ([]*rivertype.JobRow, error) {
	epoch, live, _ := q.live.State()
	var fast, fenced []int
	// seen is each message's claim as this write found it: a retry of the
	// same message may be claimed (and recorded) as soon as this write is
	// done, and must keep its own entry.
	seen := make([]claim, len(params.ID))
	q.runMu.Lock()
	for i, id := range params.ID {
		if _, ok := q.abandoned[id]; ok {
			continue
		}
		c, ok := q.claims[id]
		seen[i] = c
		switch {
		case !ok:
			// Not claimed through this instance's fetch (River's own
			// paths): nothing to fence against.
			fast = append(fast, i)
		case live && c.epoch == epoch:
			fast = append(fast, i)
		default:
			fenced = append(fenced, i)
		}
	}
	q.runMu.Unlock()

	if err := q.toDatabaseClock(ctx, params); err != nil {
		return nil, err
	}
	var out []*rivertype.JobRow
	if len(fast) > 0 {
		rows, err := exec.JobSetStateIfRunningMany(ctx, subset(params, fast))
		if err != nil {
			return nil, err
		}
		out = append(out, rows...)
	}
	if len(fenced) > 0 {
		attempts := make([]int32, len(fenced))
		for j, i := range fenced {
			attempts[j] = int32(seen[i].attempt)
		}
		rows, err := q.setOutcomesFenced(ctx, subset(params, fenced), attempts)
		if err != nil {
			return nil, err
		}
		out = append(out, rows...)
	}
	q.runMu.Lock()
	for i, id := range params.ID {
		if c, ok := q.claims[id]; ok && c == seen[i] {
			delete(q.claims, id)
		}
	}
	q.runMu.Unlock()
	return out, nil
}

func (q *EventQueue) setOutcomesFenced(ctx context.Context, p *riverdriver.JobSetStateIfRunningManyParams, attempts []int32) ([]*rivertype.JobRow, error) {
	tx, err := q.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	rows, err := tx.Query(ctx, q.fenceSQL, p.ID, attempts, q.cfg.InstanceID)
	if err != nil {
		return nil, err
	}
	ours := make(map[int64]bool)
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ours[id] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var keep []int
	for i, id := range p.ID {
		if ours[id] {
			keep = append(keep, i)
		} else {
			q.logger.Warn("queue: dropped the outcome of a message handed back while this instance's liveness session was lost",
				slog.String("instance_id", q.cfg.InstanceID), slog.Int64("message_id", id))
		}
	}
	var out []*rivertype.JobRow
	if len(keep) > 0 {
		out, err = riverpgxv5.New(nil).UnwrapExecutor(tx).JobSetStateIfRunningMany(ctx, subset(p, keep))
		if err != nil {
			return nil, err
		}
	}
	return out, tx.Commit(ctx)
}

// subset returns params restricted to the entries at indexes keep.
func subset(params *riverdriver.JobSetStateIfRunningManyParams, keep []int) *riverdriver.JobSetStateIfRunningManyParams {
	if len(keep) == len(params.ID) {
		return params
	}
	p := *params
	p.ID, p.Attempt, p.ErrData, p.FinalizedAt = pick(params.ID, keep), pick(params.Attempt, keep), pick(params.ErrData, keep), pick(params.FinalizedAt, keep)
	p.MetadataDoMerge, p.MetadataUpdates = pick(params.MetadataDoMerge, keep), pick(params.MetadataUpdates, keep)
	p.ScheduledAt, p.State = pick(params.ScheduledAt, keep), pick(params.State, keep)
	return &p
}

// pick returns s's elements at indexes keep.
func pick[T any](s []T, keep []int) []T {
	out := make([]T, len(keep))
	for i, k := range keep {
		out[i] = s[k]
	}
	return out
}

// toDatabaseClock moves every scheduled_at in params, which River computed
// from this instance's clock, to the database's clock: same distance from
// now. One query, only when there is something to move.
func (q *EventQueue) toDatabaseClock(ctx context.Context, params *riverdriver.JobSetStateIfRunningManyParams) error {
	has := false
	for _, t := range params.ScheduledAt {
		has = has || t != nil
	}
	if !has {
		return nil
	}
	offset, err := q.clockOffset(ctx)
	if err != nil {
		return err
	}
	moved := make([]*time.Time, len(params.ScheduledAt))
	for i, t := range params.ScheduledAt {
		if t != nil {
			v := t.Add(offset)
			moved[i] = &v
		}
	}
	params.ScheduledAt = moved
	return nil
}

// clockOffset returns the database clock minus this instance's clock (the
// one River and this package read, q.clock).
func (q *EventQueue) clockOffset(ctx context.Context) (time.Duration, error) {
	before := q.clock()
	var db time.Time
	if err := q.pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&db); err != nil {
		return 0, fmt.Errorf("read database clock: %w", err)
	}
	after := q.clock()
	return db.Sub(before.Add(after.Sub(before) / 2)), nil
}
