package pgcache

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// A write to a near-cached prefix outside a caller's transaction is one
// pipelined round trip: synchronous_commit off for this transaction, the
// write's statements, and the statement listen's PublishTx runs for the
// invalidation, in one batch and so one implicit transaction, committed at
// its end. The write and its invalidation still commit together or not at
// all, and the invalidation is delivered at that commit (NOTIFY).
//
// synchronous_commit off: the commit returns before its WAL record is
// flushed (the WAL writer flushes it within a few hundred ms). Nothing the
// near cache promises depends on that flush: cache_entries is UNLOGGED, so
// a server crash empties it anyway, and every listener reconnects after a
// crash and flushes its near caches (Epoch). What a crash inside that window
// can do is lose the invalidation's row of the messages log after listeners
// saw it; listen then finds the server behind its watermark and handles it
// as a switchover (docs/failure-model.md, pgcache section).
//
// A write whose statements need their results (QueryRow, Query: counters,
// object fields, bloom filters) cannot be queued: it returns
// errNotPipelined before anything is sent and runs in a transaction instead.

// errNotPipelined is returned, before anything was sent, by a write that
// cannot run as one pipeline.
var errNotPipelined = errors.New("pgcache: write needs results: not pipelined")

// syncCommitOff turns synchronous_commit off for the current transaction
// only (set_config with is_local; SET LOCAL would warn outside BEGIN).
const syncCommitOff = `SELECT set_config('synchronous_commit', 'off', true)`

// batchQuerier queues a write's statements into a batch. Exec returns an
// empty CommandTag and the statement's error later, from the batch: the
// write functions queued through it ignore the tag.
type batchQuerier struct{ b *pgx.Batch }

func (q batchQuerier) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	q.b.Queue(sql, args...)
	return pgconn.CommandTag{}, nil
}

func (q batchQuerier) Query(context.Context, string, ...any) (pgx.Rows, error) {
	return nil, errNotPipelined
}

func (q batchQuerier) QueryRow(context.Context, string, ...any) pgx.Row {
	return errRow{errNotPipelined}
}

// pipeTx is the pgx.Tx handed to listen's PublishTx: its first QueryRow
// sends the queued batch with that statement last, on the pool, and reads
// the statements before it. Anything else (a second statement, Exec, a
// batch, a savepoint) returns errNotPipelined: the batch then was not sent
// (or, after it was, nothing more may join its transaction).
type pipeTx struct {
	db interface {
		SendBatch(context.Context, *pgx.Batch) pgx.BatchResults
	}
	b   *pgx.Batch
	br  pgx.BatchResults // set once the batch is sent
	err error            // the first error of the statements before the publication
	// done is set when the batch's results were all read and it was closed.
	done bool
}

// close reads what is left of a sent batch (the commit's outcome included)
// and returns its error.
func (t *pipeTx) close() error {
	if t.br == nil || t.done {
		return nil
	}
	t.done = true
	return t.br.Close()
}

func (t *pipeTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if t.br != nil {
		return errRow{errNotPipelined}
	}
	before := t.b.Len()
	t.b.Queue(sql, args...)
	t.br = t.db.SendBatch(ctx, t.b)
	for range before {
		if _, err := t.br.Exec(); err != nil {
			t.err = err
			_ = t.close()
			return errRow{err}
		}
	}
	return pipeRow{t}
}

// pipeRow is the publication's row; reading it also reads the commit.
type pipeRow struct{ t *pipeTx }

func (r pipeRow) Scan(dest ...any) error {
	err := r.t.br.QueryRow().Scan(dest...)
	if cerr := r.t.close(); err == nil {
		err = cerr
	}
	return err
}

func (t *pipeTx) Exec(context.Context, string, ...any) (pgconn.CommandTag, error) {
	return pgconn.CommandTag{}, errNotPipelined
}

func (t *pipeTx) Query(context.Context, string, ...any) (pgx.Rows, error) {
	return nil, errNotPipelined
}

func (t *pipeTx) Begin(context.Context) (pgx.Tx, error) { return nil, errNotPipelined }

// Commit and Rollback are no-ops: the batch commits (or rolls back) at its
// end.
func (t *pipeTx) Commit(context.Context) error   { return t.close() }
func (t *pipeTx) Rollback(context.Context) error { return t.close() }

func (t *pipeTx) CopyFrom(context.Context, pgx.Identifier, []string, pgx.CopyFromSource) (int64, error) {
	return 0, errNotPipelined
}

func (t *pipeTx) SendBatch(context.Context, *pgx.Batch) pgx.BatchResults {
	return errBatch{errNotPipelined}
}

func (t *pipeTx) LargeObjects() pgx.LargeObjects { return pgx.LargeObjects{} }

func (t *pipeTx) Prepare(context.Context, string, string) (*pgconn.StatementDescription, error) {
	return nil, errNotPipelined
}

// Conn is nil: the batch runs on a pool connection of its own.
func (t *pipeTx) Conn() *pgx.Conn { return nil }

// errBatch is a pgx.BatchResults that only fails.
type errBatch struct{ err error }

func (b errBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, b.err }
func (b errBatch) Query() (pgx.Rows, error)         { return nil, b.err }
func (b errBatch) QueryRow() pgx.Row                { return errRow(b) }
func (b errBatch) Close() error                     { return b.err }
func (b errBatch) Tx() pgx.Tx                       { return nil }

// writePipelined runs a write to a near-cached prefix and its invalidation
// as one pipeline (see above); errNotPipelined means nothing was sent.
func (c *Cache) writePipelined(ctx context.Context, keys []string, reset bool, fn func(ctx context.Context, q querier) error) error {
	b := &pgx.Batch{}
	b.Queue(syncCommitOff)
	if err := fn(ctx, batchQuerier{b}); err != nil {
		return err
	}
	t := &pipeTx{db: c.m.pool, b: b}
	err := c.m.publishNear(ctx, t, c.spec.prefix, keys, reset, true)
	if cerr := t.close(); err == nil {
		err = cerr
	}
	switch {
	case t.err != nil:
		return t.err // the write's own error, not the publication's
	case t.br == nil && err == nil:
		// PublishTx ran no statement: the write was never sent.
		return errNotPipelined
	case t.br != nil && errors.Is(err, errNotPipelined):
		// The batch was sent (and committed): never redo it.
		return errPublishNotOneStatement
	}
	return err
}

// errPublishNotOneStatement would mean listen's PublishTx ran a second
// statement after the one that carried the write: the write committed with
// the first, the rest of the publication did not run.
var errPublishNotOneStatement = errors.New("pgcache: near-cache invalidation needed more than one statement; the write committed")
