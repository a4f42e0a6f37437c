package lifecycle_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/lifecycle"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/pgcache"
	"github.com/pgcoord/pgcoord/queue"
)

// component is one long-lived pgcoord component under the lifecycle
// contract: start is nil when it has no Start of its own (SyncMessages runs
// with its PubSub); use is any other call, which must fail with ErrClosed
// after stop.
type component struct {
	start, stop, use func(ctx context.Context) error
	// closed and alreadyStarted are the package's own sentinels.
	closed, alreadyStarted error
}

var components = map[string]func(t *testing.T, pool *pgxpool.Pool) component{
	"listen.PubSub": func(t *testing.T, pool *pgxpool.Pool) component {
		ps, err := listen.New(pool, nil)
		require.NoError(t, err)
		return component{start: ps.Start, stop: ps.Close,
			use: func(ctx context.Context) error {
				return ps.Publish(ctx, "c", 1, nil)
			}, closed: listen.ErrClosed, alreadyStarted: listen.ErrAlreadyStarted}
	},
	"listen.SyncMessages": func(t *testing.T, pool *pgxpool.Pool) component {
		ps, err := listen.New(pool, nil)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, ps.Close(context.Background())) })
		sm, err := listen.NewSyncMessages(ps, nil)
		require.NoError(t, err)
		return component{stop: sm.Close,
			use: func(ctx context.Context) error {
				_, err := sm.Subscribe(ctx, "c", func(context.Context, listen.Message) error { return nil })
				return err
			}, closed: listen.ErrClosed}
	},
	"pgcache.Manager": func(t *testing.T, pool *pgxpool.Pool) component {
		m, err := pgcache.NewManager(pool, nil)
		require.NoError(t, err)
		return component{start: m.Start, stop: m.Close,
			use: func(ctx context.Context) error {
				_, err := m.CreateCache(ctx, pgcache.CacheConfig{Name: "c"})
				return err
			}, closed: pgcache.ErrClosed, alreadyStarted: pgcache.ErrAlreadyStarted}
	},
	"queue.EventQueue": func(t *testing.T, pool *pgxpool.Pool) component {
		q, err := queue.New(pool, nil)
		require.NoError(t, err)
		return component{start: q.Start, stop: q.Stop,
			use: func(ctx context.Context) error {
				_, err := q.Publish(ctx, "c", 1, nil)
				return err
			}, closed: queue.ErrClosed, alreadyStarted: queue.ErrAlreadyStarted}
	},
	"advisorylock.Manager": func(t *testing.T, pool *pgxpool.Pool) component {
		m, err := advisorylock.New(pool, nil)
		require.NoError(t, err)
		return component{start: m.Start, stop: m.Close,
			use: func(ctx context.Context) error {
				_, err := m.TryAcquire(ctx, "k", 0)
				return err
			}, closed: advisorylock.ErrClosed, alreadyStarted: advisorylock.ErrAlreadyStarted}
	},
	"app.App": func(t *testing.T, pool *pgxpool.Pool) component {
		a, err := app.New(context.Background(), app.Config{Pool: pool})
		require.NoError(t, err)
		return component{start: a.Start, stop: a.Stop,
			use: func(ctx context.Context) error {
				_, err := a.EventQueue().Publish(ctx, "c", 1, nil)
				return err
			}, closed: app.ErrClosed, alreadyStarted: app.ErrAlreadyStarted}
	},
}

// TestContract runs the one lifecycle contract against every component:
// Stop before Start and Stop twice are nil, Start twice is ErrAlreadyStarted,
// Start and every other call after Stop are ErrClosed, and each package's
// sentinel Is the shared one (app.ErrClosed, app.ErrAlreadyStarted).
func TestContract(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	for name, build := range components {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()

			t.Run("stop before start", func(t *testing.T) {
				c := build(t, db.Pool)
				require.NoError(t, c.stop(ctx))
				require.NoError(t, c.stop(ctx), "stop twice")
				if c.start != nil {
					requireClosed(t, c, c.start(ctx))
				}
				requireClosed(t, c, c.use(ctx))
			})
			t.Run("start twice, stop twice", func(t *testing.T) {
				c := build(t, db.Pool)
				if c.start != nil {
					require.NoError(t, c.start(ctx))
					err := c.start(ctx)
					require.ErrorIs(t, err, c.alreadyStarted)
					require.ErrorIs(t, err, app.ErrAlreadyStarted)
					require.ErrorIs(t, err, lifecycle.ErrAlreadyStarted)
				}
				require.NoError(t, c.stop(ctx))
				require.NoError(t, c.stop(ctx), "stop twice")
				if c.start != nil {
					requireClosed(t, c, c.start(ctx))
				}
				requireClosed(t, c, c.use(ctx))
			})
		})
	}
}

func requireClosed(t *testing.T, c component, err error) {
	t.Helper()
	require.ErrorIs(t, err, c.closed)
	require.ErrorIs(t, err, app.ErrClosed)
}
