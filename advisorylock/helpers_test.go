package advisorylock_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/advisorylock"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// newManager starts a Manager on pool and closes it when the test ends.
func newManager(t *testing.T, pool *pgxpool.Pool, cfg *advisorylock.Config) *advisorylock.Manager {
	t.Helper()
	c := advisorylock.Config{PollInterval: 100 * time.Millisecond}
	if cfg != nil {
		c = *cfg
		if c.PollInterval == 0 {
			c.PollInterval = 100 * time.Millisecond
		}
	}
	if c.Logger == nil {
		// Expected warnings (lost locks) would only clutter the output.
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m, err := advisorylock.New(pool, &c)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, m.Start(ctx))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, m.Close(ctx))
	})
	return m
}

// instance is one simulated instance of an app: its own pool and Manager.
func instance(t *testing.T, db *pgtest.DB, name string, cfg *advisorylock.Config) *advisorylock.Manager {
	t.Helper()
	pool := db.NewPool(t, &pgtest.PoolOptions{AppName: name, MaxConns: 10})
	c := advisorylock.Config{}
	if cfg != nil {
		c = *cfg
	}
	c.InstanceID = name
	return newManager(t, pool, &c)
}

// setup marks t parallel and gives it a database of its own and a context
// that ends with the test (at most 60 s): the opening of most tests here.
func setup(t *testing.T) (context.Context, *pgtest.DB) {
	t.Helper()
	t.Parallel()
	db := pgtest.NewDB(t)
	return testCtx(t), db
}

// newLocal returns a Local closed when the test ends.
func newLocal(t *testing.T) *advisorylock.Local {
	t.Helper()
	lc := advisorylock.NewLocal()
	t.Cleanup(func() { require.NoError(t, lc.Close(context.Background())) })
	return lc
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// twoInstances starts instances inst-a and inst-b (both with cfg; nil:
// defaults) on a fresh database: the opening of most cluster tests.
func twoInstances(t *testing.T, cfg *advisorylock.Config) (context.Context, *pgtest.DB, *advisorylock.Manager, *advisorylock.Manager) {
	t.Helper()
	db := pgtest.NewDB(t)
	return testCtx(t), db, instance(t, db, "inst-a", cfg), instance(t, db, "inst-b", cfg)
}

// acquireAsync starts m.Acquire(ctx, key, ttl) in a goroutine; the channel
// yields the lock (nil after an error, which fails the test).
func acquireAsync(t *testing.T, ctx context.Context, m *advisorylock.Manager, key string, ttl time.Duration) <-chan *advisorylock.Lock {
	t.Helper()
	got := make(chan *advisorylock.Lock, 1)
	go func() {
		l, err := m.Acquire(ctx, key, ttl)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	return got
}

// acquireErrAsync starts lk.Acquire(ctx, key, time.Minute) in a goroutine,
// releasing the lock at once when release is set; the channel yields the
// error of the two.
func acquireErrAsync(ctx context.Context, lk advisorylock.Locker, key string, release bool) <-chan error {
	done := make(chan error, 1)
	go func() {
		l, err := lk.Acquire(ctx, key, time.Minute)
		if err == nil && release {
			err = l.Release(ctx)
		}
		done <- err
	}()
	return done
}
