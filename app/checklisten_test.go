package app_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/connname"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/pgcoordtest"
)

// cutCheck is a query tracer that, before the LISTEN self-check's NOTIFY is
// sent, terminates the self-check's LISTEN connection and waits until the
// server has ended it.
type cutCheck struct {
	t    *testing.T
	db   *pgtest.DB
	name string // the check connection's application_name
	done atomic.Bool
}

func (c *cutCheck) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if len(data.Args) == 0 || data.Args[0] != "pgcoord_listen_check" || !c.done.CompareAndSwap(false, true) {
		return ctx
	}
	n, err := c.db.TerminateBackends(ctx, c.name)
	if err != nil || n != 1 {
		c.t.Errorf("terminate the check connection: %d ended, %v", n, err)
		return ctx
	}
	pgcoordtest.WaitFor(c.t, "the check connection ended", func(ctx context.Context) (bool, error) {
		var left int
		err := c.db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, c.name).Scan(&left)
		return left == 0, err
	})
	return ctx
}

func (c *cutCheck) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// A LISTEN self-check whose connection is cut by the server fails Start with
// the connection's error, not with ErrListenUnsupported: nothing says a
// pooler is in the way.
func TestListenCheckCutIsNotAPooler(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	cut := &cutCheck{t: t, db: db, name: connname.Name("cut", "c1", connname.RoleCheck)}
	cfg := db.Pool.Config().Copy()
	cfg.ConnConfig.Tracer = cut
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	a, err := app.New(ctx, app.Config{Name: "cut", Pool: pool, InstanceID: "c1"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Stop(context.Background()) })
	err = a.Start(ctx)
	require.True(t, cut.done.Load(), "the self-check never sent its NOTIFY")
	require.Error(t, err)
	require.NotErrorIs(t, err, app.ErrListenUnsupported)
	require.ErrorContains(t, err, "57P01")
}
