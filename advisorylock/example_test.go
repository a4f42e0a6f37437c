package advisorylock_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

func Example() {
	db, cleanup := pgtest.ExampleDB()
	defer cleanup()
	ctx := context.Background()

	locks, err := advisorylock.New(db.Pool, &advisorylock.Config{AppName: "main", InstanceID: "node-1"})
	if err != nil {
		panic(err)
	}
	if err := locks.Start(ctx); err != nil {
		panic(err)
	}
	defer locks.Close(ctx)

	// Serialise a job across the cluster; the lease is renewed while it runs,
	// and the write is fenced by CheckTx in the same transaction.
	err = locks.RunExclusive(ctx, "fields.beforeDestroy:posts", 5*time.Second, func(ctx context.Context, l *advisorylock.Lock) error {
		return pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
			if err := l.CheckTx(ctx, tx); err != nil {
				return err
			}
			// ... writes protected by the lock ...
			return nil
		})
	})
	fmt.Println("run exclusive:", err)

	// Run once across the cluster: whoever gets the reservation runs, the others skip.
	job, err := locks.TryAcquire(ctx, "backup:auto-task", 0)
	if err != nil {
		fmt.Println("skipped:", err)
		return
	}
	_, err = locks.TryAcquire(ctx, "backup:auto-task", 0)
	var busy *advisorylock.LockAcquireError
	fmt.Println("second try is LockAcquireError:", errors.As(err, &busy), busy.Reason)
	err = job.RunExclusive(ctx, time.Minute, func(ctx context.Context) error {
		return nil // the backup
	})
	fmt.Println("backup:", err)
	// Output:
	// run exclusive: <nil>
	// second try is LockAcquireError: true locked
	// backup: <nil>
}

func ExampleNewLocal() {
	ctx := context.Background()
	var locks advisorylock.Locker = advisorylock.NewLocal()
	defer locks.Close(ctx)

	l, err := locks.Acquire(ctx, "counter", time.Second)
	if err != nil {
		panic(err)
	}
	_, err = locks.TryAcquire(ctx, "counter", 10*time.Millisecond)
	var busy *advisorylock.LockAcquireError
	fmt.Println(errors.As(err, &busy), busy.Reason)
	fmt.Println(l.Release(ctx), l.Release(ctx))
	// Output:
	// true timed out
	// <nil> <nil>
}
