package advisorylock

import (
	"reflect"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/txhooks"
)

// commitGuard says how CheckTx on tx can keep the commit fenced.
//
// CheckTx's fence is a FOR KEY SHARE row lock. Taken at the outermost level
// of a transaction it lasts until the transaction ends. Taken inside a
// savepoint it ends when that savepoint (or an enclosing one) is rolled
// back, while the transaction may go on and commit. So:
//   - outermost level (a plain pgx.Tx or *txhooks.Tx that is not a
//     savepoint): nil, nil — the row lock is enough;
//   - a *txhooks.Tx savepoint: its outermost *txhooks.Tx, on which CheckTx
//     registers a check that runs right before COMMIT;
//   - a pgx savepoint, plain or wrapped: ErrSavepoint — nothing can run
//     before the outer COMMIT.
//
// Savepoints opened with SQL (SAVEPOINT …) are invisible here; see CheckTx.
func commitGuard(tx pgx.Tx) (*txhooks.Tx, error) {
	if htx, ok := tx.(*txhooks.Tx); ok {
		root := htx.Outermost()
		if isPgxSavepoint(root.Tx) {
			return nil, ErrSavepoint
		}
		if root == htx {
			return nil, nil
		}
		return root, nil
	}
	if isPgxSavepoint(tx) {
		return nil, ErrSavepoint
	}
	return nil, nil
}

// isPgxSavepoint reports whether tx is pgx's savepoint type (what
// pgx.Tx.Begin returns, also through *pgxpool.Tx). pgx does not export it,
// so it is recognised by name; TestCheckTxRefusesPlainPgxSavepoint fails if
// a pgx upgrade renames it.
func isPgxSavepoint(tx pgx.Tx) bool {
	t := reflect.TypeOf(tx)
	if t == nil || t.Kind() != reflect.Pointer {
		return false
	}
	t = t.Elem()
	return t.PkgPath() == "github.com/jackc/pgx/v5" && t.Name() == "dbSimulatedNestedTx"
}
