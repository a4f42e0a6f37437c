package listen

import (
	"context"
	"errors"
	"strconv"
	"strings"
)

// Publish batching. A few publisher goroutines per PubSub take the Publish
// calls waiting at that moment and write them in one statement. Under no
// contention a batch is one message and costs the same single statement as
// an unbatched publish; under contention many messages share one commit and
// one NOTIFY.
const (
	publishWorkers  = 2
	maxPublishBatch = 128
	// maxBatchBytes bounds the payload bytes of one batch.
	maxBatchBytes = 4 << 20
)

type pubReq struct {
	ctx  context.Context
	args publishArgs
	done chan error // capacity 1
}

// enqueuePublish hands req to a publisher goroutine, starting them on first use.
func (ps *PubSub) enqueuePublish(ctx context.Context, req *pubReq) error {
	ps.mu.Lock()
	if ps.state == stateClosed {
		ps.mu.Unlock()
		return ErrClosed
	}
	if ps.pubCh == nil {
		ps.pubCh = make(chan *pubReq, maxPublishBatch)
		for range publishWorkers {
			ps.wg.Add(1)
			go func() {
				defer ps.wg.Done()
				ps.publisher()
			}()
		}
	}
	ch := ps.pubCh
	ps.mu.Unlock()
	select {
	case ch <- req:
		return nil
	case <-ps.ctx.Done():
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (ps *PubSub) publisher() {
	batch := make([]*pubReq, 0, maxPublishBatch)
	for {
		batch = batch[:0]
		select {
		case <-ps.ctx.Done():
			ps.failQueued()
			return
		case r := <-ps.pubCh:
			batch = append(batch, r)
		}
		size := len(batch[0].args.payload)
	drain:
		for len(batch) < maxPublishBatch && size < maxBatchBytes {
			select {
			case r := <-ps.pubCh:
				batch = append(batch, r)
				size += len(r.args.payload)
			default:
				break drain
			}
		}
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
	}
}

// failQueued answers the requests still queued at Close.
func (ps *PubSub) failQueued() {
	for {
		select {
		case r := <-ps.pubCh:
			r.done <- ErrClosed
		default:
			return
		}
	}
}

func (ps *PubSub) publishBatch(batch []*pubReq) {
	ctx, cancel := context.WithTimeout(ps.ctx, queryTimeout)
	defer cancel()
	envs := make([]envelope, len(batch))
	var err error
	if len(batch) == 1 {
		a := batch[0].args
		err = ps.pool.QueryRow(ctx, ps.sql.publish,
			ps.cfg.AppName, a.channel, ps.cfg.InstanceID, a.skipSelf, a.onlySelf, string(a.payload),
			ps.physChannel, inlineRest(a, ps.cfg.InstanceID),
		).Scan(&envs[0].msg.ID, &envs[0].xid, &envs[0].msg.PublishedAt, nil)
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
	ps.stats.published.Add(int64(len(batch)))
	var local []envelope
	for i, r := range batch {
		if !r.args.skipSelf {
			// The row is committed: deliver locally now rather than after
			// the notification's round trip. Deduplication by id makes the
			// notification a no-op when it arrives.
			e := envs[i]
			e.msg.Channel, e.msg.Payload, e.msg.Sender = r.args.channel, r.args.payload, ps.cfg.InstanceID
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
	for i, r := range batch {
		channels[i], skip[i], only[i], payloads[i] = r.args.channel, r.args.skipSelf, r.args.onlySelf, string(r.args.payload)
	}
	sender := ps.cfg.InstanceID
	head := strconv.Itoa(len(sender)) + ":" + sender
	rows, err := ps.pool.Query(ctx, ps.sql.publishMany,
		ps.cfg.AppName, sender, channels, skip, only, payloads,
		ps.physChannel, head, inlineLimit-len(head)-1)
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

// parseBatch parses "B<sender_len>:<sender>" followed by entries
// "<id>,<xid>,<unix_micros>,<flags>,<channel_len>,<payload_len>:<channel><payload>".
func parseBatch(p string) ([]envelope, error) {
	p = p[1:]
	colon := strings.IndexByte(p, ':')
	if colon < 0 {
		return nil, errMalformed
	}
	sl, err := strconv.Atoi(p[:colon])
	if err != nil || sl < 0 || colon+1+sl > len(p) {
		return nil, errMalformed
	}
	sender := p[colon+1 : colon+1+sl]
	p = p[colon+1+sl:]
	var envs []envelope
	for len(p) > 0 {
		colon := strings.IndexByte(p, ':')
		if colon < 0 {
			return nil, errMalformed
		}
		f := strings.Split(p[:colon], ",")
		if len(f) != 6 {
			return nil, errMalformed
		}
		var nums [6]int64
		for i, s := range f {
			if i == 1 {
				continue
			}
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return nil, errMalformed
			}
			nums[i] = v
		}
		xid, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return nil, errMalformed
		}
		rest := p[colon+1:]
		cl, pl := nums[4], nums[5]
		if cl < 0 || pl < 0 || cl+pl > int64(len(rest)) {
			return nil, errMalformed
		}
		var e envelope
		e.msg.ID, e.xid = nums[0], xid
		e.msg.PublishedAt = microsTime(nums[2])
		e.skipSelf, e.onlySelf = nums[3]&1 != 0, nums[3]&2 != 0
		e.msg.Sender = sender
		e.msg.Channel = rest[:cl]
		e.msg.Payload = []byte(rest[cl : cl+pl])
		envs = append(envs, e)
		p = rest[cl+pl:]
	}
	return envs, nil
}
