package fielddestroy_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/demo/demotest"
	"github.com/pgcoord/pgcoord/internal/demo/fielddestroy"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// critical counts removals inside the critical section across all instances.
type critical struct {
	inside, max atomic.Int64
}

func (c *critical) enter(context.Context, string, string) {
	n := c.inside.Add(1)
	for {
		m := c.max.Load()
		if n <= m || c.max.CompareAndSwap(m, n) {
			break
		}
	}
	runtime.Gosched() // give an overlapping removal every chance to show up
	c.inside.Add(-1)
}

// startInstances starts n instances of the plugin; synced, when not nil, is
// notified each time an instance applied another's sync message.
func startInstances(t *testing.T, db *pgtest.DB, n int, c *critical, synced *pgtest.Signal) ([]*app.App, []*fielddestroy.Plugin) {
	return demotest.Start(t, db, "fielddemo", n, func(string) (*fielddestroy.Plugin, error) {
		p, err := fielddestroy.New("")
		if p != nil {
			p.InCriticalSection = c.enter
			if synced != nil {
				p.OnSync = func(fielddestroy.Message, string) { synced.Notify() }
			}
		}
		return p, err
	})
}

func TestConcurrentRemovalsAreSerializedAndAnnounced(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	c := &critical{}
	var synced pgtest.Signal
	apps, plugins := startInstances(t, db, 3, c, &synced)

	const perInstance = 4
	var all []string
	for i := range 3 * perInstance {
		all = append(all, fmt.Sprintf("f%02d", i))
	}
	require.NoError(t, plugins[0].AddFields(ctx, "posts", all...))
	for _, p := range plugins {
		synced.WaitUntil(t, 30*time.Second, func() bool { return len(p.Fields("posts")) == len(all) }, "%s has %v", p.App().InstanceID(), p.Fields("posts"))
	}

	// Every instance removes its share of the fields, all at once.
	var g errgroup.Group
	for i, p := range plugins {
		for j := range perInstance {
			field := all[i*perInstance+j]
			g.Go(func() error {
				removed, err := p.RemoveField(ctx, "posts", field)
				if err == nil && !removed {
					err = fmt.Errorf("%s was not removed", field)
				}
				return err
			})
		}
	}
	require.NoError(t, g.Wait())
	require.EqualValues(t, 1, c.max.Load(), "never two removals inside the critical section at once")
	v, err := plugins[1].Version(ctx, "posts")
	require.NoError(t, err)
	require.EqualValues(t, len(all), v, "no read-modify-write of the version was lost")

	// Every instance dropped every field: its own at commit, the others' by sync message.
	for _, p := range plugins {
		synced.WaitUntil(t, 30*time.Second, func() bool { return len(p.Fields("posts")) == 0 }, "%s has %v", p.App().InstanceID(), p.Fields("posts"))
	}
	var left int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM fields`).Scan(&left))
	require.Zero(t, left)

	// Removing a field that is gone is not an error and announces nothing.
	removed, err := plugins[2].RemoveField(ctx, "posts", all[0])
	require.NoError(t, err)
	require.False(t, removed)
	for _, a := range apps {
		require.NoError(t, a.Stop(ctx))
	}
	for i, p := range plugins {
		// 1 addFields message (not on its sender) + the 8 removals of the others.
		want := int64(2 * perInstance)
		if i != 0 {
			want++
		}
		require.Equal(t, want, p.Synced(), "instance %d", i)
	}
	var waited int64
	for _, a := range apps {
		waited += a.Locks().Stats().Waited
	}
	t.Logf("lock waits: %d", waited)
}

func TestBadInput(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	_, plugins := startInstances(t, db, 1, &critical{}, nil)
	_, err := plugins[0].RemoveField(ctx, "", "x")
	require.Error(t, err)
	require.Error(t, plugins[0].AddFields(ctx, "posts", ""))
	unbound, err := fielddestroy.New("")
	require.NoError(t, err)
	_, err = unbound.RemoveField(ctx, "posts", "x")
	require.ErrorIs(t, err, app.ErrPluginNotBound)
	_, err = fielddestroy.New("bad schema")
	require.ErrorContains(t, err, "fielddestroy: ")
}
