package txhooks_test

import (
	"context"
	"fmt"

	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/txhooks"
)

func ExampleRun() {
	db, cleanup := pgtest.ExampleDB()
	defer cleanup()
	ctx := context.Background()

	err := txhooks.Run(ctx, db.Pool, func(ctx context.Context, tx *txhooks.Tx) error {
		tx.AfterCommit(func(ctx context.Context) error {
			fmt.Println("committed: now tell the other instances")
			return nil
		})
		tx.AfterRollback(func(ctx context.Context) error {
			fmt.Println("rolled back")
			return nil
		})
		_, err := tx.Exec(ctx, `CREATE TABLE notes (body text)`)
		return err
	})
	fmt.Println("err:", err)
	// Output:
	// committed: now tell the other instances
	// err: <nil>
}
