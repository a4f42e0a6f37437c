package pgtest

import (
	"context"
	"testing"
)

// Setup marks t parallel and gives it a background context and a database
// of its own: the opening of most database tests.
func Setup(t *testing.T) (context.Context, *DB) {
	t.Helper()
	t.Parallel()
	return context.Background(), NewDB(t)
}
