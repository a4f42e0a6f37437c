// Package txhooks wraps a pgx transaction so that code can schedule work to
// run only after the transaction's outcome is known: [Tx.AfterCommit] hooks run
// after the outermost COMMIT succeeded, [Tx.AfterRollback] hooks after it
// rolled back.
//
// pgcoord uses it to send NOTIFY-driven messages and to update in-process state
// only for data that other sessions can already see. Any package that accepts a
// pgx.Tx recognises a *[Tx] and uses its hooks; with a plain pgx.Tx it falls
// back to something that is also correct after commit.
//
// # Guarantees
//
//   - Commit hooks run only after the outermost COMMIT returned success, in
//     registration order, synchronously before Commit returns, on a context
//     that carries the caller's values but is never cancelled
//     ([context.WithoutCancel]).
//   - A hook that returns an error or panics is logged (log/slog, the logger set
//     with [Tx.SetLogger], else [slog.Default]) and never undoes the commit nor
//     skips later hooks.
//   - Rollback hooks run whenever the outcome is known to be a rollback:
//     [Tx.Rollback]; a COMMIT that PostgreSQL turns into a ROLLBACK (the
//     transaction had failed; pgx returns [pgx.ErrTxCommitRollback]); a
//     COMMIT that was never sent (the context ended first: pgx returns an
//     error for which [pgconn.SafeToRetry] is true, and closes the
//     connection, so the server aborts the transaction); a COMMIT the server
//     refused with an ERROR (a deferred constraint, a serialization failure).
//   - A COMMIT that was sent but whose outcome is unknown (the connection
//     broke before the answer, or a FATAL error) runs neither commit nor
//     rollback hooks: it logs a warning and runs the [Tx.AfterOutcomeUnknown]
//     hooks, so that whatever must not outlive the transaction is freed. The
//     caller gets the error.
//   - [Tx.BeforeCommit] hooks run just before the outermost COMMIT is sent
//     and may veto it: a failing one makes Commit roll back and return its
//     error. [Tx.Outermost] gives the transaction whose commit a hook should
//     guard whatever savepoints do (advisorylock's CheckTx uses both).
//   - Savepoints ([Tx.Begin], [Tx.Savepoint]) have hooks of their own. When a
//     savepoint is released its hooks move to the parent (also when RELEASE
//     failed: the outermost outcome then decides); when it is rolled back
//     its commit and outcome-unknown hooks are dropped and its rollback hooks
//     run at once.
//   - A hook registered after the transaction ended is not run; it is logged at
//     error level.
//
// [Run] is the usual entry point: it begins, calls fn, commits when fn returns
// nil, and rolls back on error or panic.
package txhooks
