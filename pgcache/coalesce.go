package pgcache

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// readBatcher coalesces the point reads of one postgres-store cache, as
// group commit coalesces commits: a Get that finds fewer than lanes reads of
// the cache in flight runs its own point SELECT at once (concurrency 1 pays
// nothing, and up to lanes Gets run as they would alone); Gets that arrive
// while every lane is busy queue, and the first read to end takes them all
// into one SELECT … key = ANY($3) on its lane, which the Gets queued
// meanwhile wait for in turn. Under load each statement carries every key
// asked for while the lanes were busy.
//
// Each Get keeps its own contract: it returns when its ctx ends, whatever
// the batch does (the batch's statement is cancelled only when every Get
// waiting for it has gone); a statement error reaches the Gets of that batch
// and no other; expiry is the statement's (the database clock decides).
type readBatcher struct {
	s *pgStore
	// withTTL reads each entry's remaining lifetime too (the near cache
	// bounds its copies by it).
	withTTL bool

	// lanes bounds the reads of this cache in flight: the pool's size.
	lanes int

	mu       sync.Mutex // guards inflight and pending
	inflight int        // reads in flight, at most lanes
	pending  []*readReq // Gets waiting for the next batch, in arrival order

	// statements counts the read statements run (point and batch).
	statements atomic.Uint64
	// testHookRead, when set, runs before each read statement with its keys.
	testHookRead func(keys []string)
	// testHookQueued, when set, runs after a Get queued, with the number
	// of Gets now waiting for the next batch.
	testHookQueued func(pending int)
}

// readReq is one queued Get.
type readReq struct {
	ctx  context.Context
	key  string
	res  readResult    // written before done is closed
	done chan struct{} // closed when res is set
}

// readResult is the outcome of one key's read.
type readResult struct {
	e   encoded
	ttl time.Duration // noTTL without expiry; only when withTTL
	ok  bool
	err error
}

// get reads key, alone or in a batch.
func (b *readBatcher) get(ctx context.Context, key string) readResult {
	b.mu.Lock()
	if b.inflight < b.lanes {
		b.inflight++
		b.mu.Unlock()
		r := b.point(ctx, key)
		b.next()
		return r
	}
	req := &readReq{ctx: ctx, key: key, done: make(chan struct{})}
	b.pending = append(b.pending, req)
	n := len(b.pending)
	b.mu.Unlock()
	if h := b.testHookQueued; h != nil {
		h(n)
	}
	select {
	case <-req.done:
		return req.res
	case <-ctx.Done():
		return readResult{err: ctx.Err()}
	}
}

// next ends a read: the Gets queued meanwhile are read by a batch on the
// same lane, on a goroutine of its own that lives until no Get is waiting.
func (b *readBatcher) next() {
	if batch := b.take(); batch != nil {
		go b.run(batch)
	}
}

// take returns the queued Gets, keeping the caller's lane, or frees the
// lane when none is waiting.
func (b *readBatcher) take() []*readReq {
	b.mu.Lock()
	defer b.mu.Unlock()
	batch := b.pending
	b.pending = nil
	if batch == nil {
		b.inflight--
	}
	return batch
}

// run reads batches on one lane until no Get is waiting.
func (b *readBatcher) run(batch []*readReq) {
	for batch != nil {
		b.serve(batch)
		batch = b.take()
	}
}

// serve reads one batch in one statement and hands every Get its result.
func (b *readBatcher) serve(batch []*readReq) {
	live := batch[:0]
	for _, r := range batch {
		if r.ctx.Err() == nil { // a gone Get is not read for
			live = append(live, r)
		}
	}
	if len(live) == 0 {
		return
	}
	// The statement runs until it ends or every Get waiting for it has
	// gone; it keeps the first Get's context values (trace, logger).
	ctx, cancel := context.WithCancel(context.WithoutCancel(live[0].ctx))
	defer cancel()
	var waiting atomic.Int64
	waiting.Store(int64(len(live)))
	for _, r := range live {
		stop := context.AfterFunc(r.ctx, func() {
			if waiting.Add(-1) == 0 {
				cancel()
			}
		})
		defer stop()
	}
	if len(live) == 1 {
		r := live[0]
		r.res = b.point(ctx, r.key)
		close(r.done)
		return
	}
	keys := make([]string, len(live))
	for i, r := range live {
		keys[i] = r.key
	}
	b.statements.Add(1)
	if h := b.testHookRead; h != nil {
		h(keys)
	}
	var (
		vals  []encoded
		ttls  []time.Duration
		found []bool
		err   error
	)
	if b.withTTL {
		vals, ttls, found, err = b.s.mgetTTL(ctx, keys)
	} else {
		vals, found, err = b.s.mget(ctx, keys)
	}
	for i, r := range live {
		switch {
		case err != nil:
			r.res = readResult{err: err}
		case ttls != nil:
			r.res = readResult{e: vals[i], ttl: ttls[i], ok: found[i]}
		default:
			r.res = readResult{e: vals[i], ok: found[i]}
		}
		close(r.done)
	}
}

// point reads one key with the point SELECT.
func (b *readBatcher) point(ctx context.Context, key string) readResult {
	b.statements.Add(1)
	if h := b.testHookRead; h != nil {
		h([]string{key})
	}
	var r readResult
	if b.withTTL {
		r.e, r.ttl, r.ok, r.err = b.s.getTTL(ctx, key)
	} else {
		r.e, _, r.ok, r.err = b.s.get(ctx, key)
	}
	return r
}
