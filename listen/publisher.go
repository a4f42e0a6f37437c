package listen

import (
	"context"
	"errors"
)

// Publish batching (group commit). A Publish call queues its request, then
// takes one of publishSlots slots if one is free; a slot holder writes every
// queued request (up to maxPublishBatch) in one statement. Without contention
// a batch is the caller's own message, written on the caller's goroutine in a
// single statement; under contention many messages share one commit and one
// NOTIFY. A caller stops holding once its own request was written; requests
// still queued then go to a drainer goroutine (owned by the PubSub), so none
// is stranded and no caller serves others indefinitely.
const (
	publishSlots    = 1
	maxPublishBatch = 128
	// maxBatchBytes bounds the payload bytes of one batch.
	maxBatchBytes = 4 << 20
)

type pubReq struct {
	ctx   context.Context
	args  publishArgs
	done  chan error // capacity 1
	taken bool       // in a batch; guarded by PubSub.pubMu
}

// publishQueue is guarded by PubSub.pubMu.
type publishQueue struct {
	reqs  []*pubReq
	slots int // slots taken
}

func (ps *PubSub) submitPublish(req *pubReq) {
	ps.pubMu.Lock()
	ps.pubQ.reqs = append(ps.pubQ.reqs, req)
	ps.pubMu.Unlock()
	ps.drainPublishes(req)
}

// drainPublishes writes queued batches while a slot is free. With own set it
// returns once own was taken into a batch (by anyone) and written if it was
// its own; with own nil it returns when the queue is empty.
func (ps *PubSub) drainPublishes(own *pubReq) {
	for {
		ps.pubMu.Lock()
		if len(ps.pubQ.reqs) == 0 || ps.pubQ.slots >= publishSlots {
			ps.pubMu.Unlock()
			return // nothing to do, or the holders look again after their batch
		}
		if own != nil && own.taken {
			ps.pubMu.Unlock()
			ps.spawnDrainer()
			return
		}
		ps.pubQ.slots++
		n, size := 0, 0
		for n < len(ps.pubQ.reqs) && n < maxPublishBatch && size < maxBatchBytes {
			size += len(ps.pubQ.reqs[n].args.payload)
			ps.pubQ.reqs[n].taken = true
			n++
		}
		var batch []*pubReq
		if n == len(ps.pubQ.reqs) {
			// The whole queue: take its array (no copy), the queue starts a new one.
			batch, ps.pubQ.reqs = ps.pubQ.reqs, nil
		} else {
			batch = append([]*pubReq(nil), ps.pubQ.reqs[:n]...)
			clear(ps.pubQ.reqs[:n])
			ps.pubQ.reqs = ps.pubQ.reqs[n:]
		}
		ps.pubMu.Unlock()

		// Callers that gave up are not published.
		live := batch[:0]
		for _, r := range batch {
			if err := r.ctx.Err(); err != nil {
				r.done <- err
				continue
			}
			live = append(live, r)
		}
		if len(live) > 0 {
			ps.publishBatch(live)
		}

		ps.pubMu.Lock()
		ps.pubQ.slots--
		ps.pubMu.Unlock()
	}
}

// spawnDrainer starts a goroutine that writes what is queued. Close waits
// for it (its statements fail fast once the PubSub is closed).
func (ps *PubSub) spawnDrainer() {
	ps.mu.RLock()
	defer ps.mu.RUnlock()
	if ps.state == stateClosed {
		// Close has begun waiting; answer what is queued instead.
		ps.pubMu.Lock()
		reqs := ps.pubQ.reqs
		ps.pubQ.reqs = nil
		ps.pubMu.Unlock()
		for _, r := range reqs {
			r.done <- ErrClosed
		}
		return
	}
	ps.wg.Add(1)
	go func() {
		defer ps.wg.Done()
		ps.drainPublishes(nil)
	}()
}

func (ps *PubSub) publishBatch(batch []*pubReq) {
	// Not the caller's context: the batch may carry other callers' messages.
	ctx, cancel := context.WithTimeout(ps.ctx, queryTimeout)
	defer cancel()
	envs := make([]envelope, len(batch))
	var err error
	if len(batch) == 1 && len(batch[0].args.headers) == 0 {
		a := batch[0].args
		err = ps.pool.QueryRow(ctx, ps.sql.publish,
			ps.args.app, a.channel, ps.args.sender, a.skipSelf, a.onlySelf, string(a.payload),
			ps.args.channel, inlineRest(a.wire(), ps.cfg.InstanceID),
		).Scan(&envs[0].msg.ID, &envs[0].xid, &envs[0].msg.PublishedAt, nil, nil)
	} else {
		err = ps.publishMany(ctx, batch, envs)
	}
	if err != nil {
		if ps.ctx.Err() != nil {
			err = errors.Join(ErrClosed, err)
		}
		for _, r := range batch {
			r.done <- err
		}
		return
	}
	ps.count(&ps.stats.published, int64(len(batch)))
	var local []envelope
	for i, r := range batch {
		if !r.args.skipSelf {
			// The row is committed: deliver locally now rather than after
			// the notification's round trip. Deduplication by id makes the
			// notification a no-op when it arrives.
			e := envs[i]
			e.msg.Channel, e.msg.Payload, e.msg.Sender, e.msg.Headers = r.args.channel, r.args.payload, ps.cfg.InstanceID, r.args.headers
			e.skipSelf, e.onlySelf = r.args.skipSelf, r.args.onlySelf
			local = append(local, e)
		}
	}
	if len(local) > 0 {
		ps.mu.RLock()
		started := ps.state == stateStarted
		ps.mu.RUnlock()
		if started {
			ps.dispatch(local, false)
		}
	}
	for _, r := range batch {
		r.done <- nil
	}
}

func (ps *PubSub) publishMany(ctx context.Context, batch []*pubReq, envs []envelope) error {
	channels := make([]string, len(batch))
	skip := make([]bool, len(batch))
	only := make([]bool, len(batch))
	payloads := make([]string, len(batch))
	var headers []string // nil (NULL) when no message has headers
	rests := make([]string, len(batch))
	sender := ps.cfg.InstanceID
	ws := make([]wireOut, len(batch))
	for i, r := range batch {
		ws[i] = r.args.wire()
	}
	kind := batchKind(ws)
	head := batchPrefix(kind, sender)
	inline, size := true, len(head)
	for i, r := range batch {
		a := r.args
		channels[i], skip[i], only[i], payloads[i] = a.channel, a.skipSelf, a.onlySelf, string(a.payload)
		if len(a.headers) > 0 {
			if headers == nil {
				headers = make([]string, len(batch))
			}
			headers[i] = encodeHeaders(a.headers)
		}
		if inline {
			rests[i] = entryRest(kind, ws[i])
			size += len(rests[i]) + entryOverhead
			inline = size <= inlineLimit
		}
	}
	if !inline {
		clear(rests)
	}
	rows, err := ps.pool.Query(ctx, ps.sql.publishMany,
		ps.cfg.AppName, sender, channels, skip, only, payloads,
		ps.physChannel, head, inlineLimit, rests, inline, headers)
	if err != nil {
		return err
	}
	defer rows.Close()
	i := 0
	for rows.Next() {
		if i >= len(envs) {
			return errors.New("publish: more rows than messages")
		}
		if err := rows.Scan(&envs[i].msg.ID, &envs[i].xid, &envs[i].msg.PublishedAt); err != nil {
			return err
		}
		i++
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if i != len(envs) {
		return errors.New("publish: fewer rows than messages")
	}
	return nil
}
