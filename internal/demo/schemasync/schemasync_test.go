package schemasync_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/demo/demotest"
	"github.com/pgcoord/pgcoord/internal/demo/schemasync"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/txhooks"
)

func startInstances(t *testing.T, db *pgtest.DB, n int, reloads chan<- string) ([]*app.App, []*schemasync.Plugin) {
	return demotest.Start(t, db, "schemademo", n, func(id string) (*schemasync.Plugin, error) {
		p, err := schemasync.New("")
		if p != nil {
			p.OnReload = func(r schemasync.Reload) { reloads <- id + ":" + r.Collection + ":from:" + r.Sender }
		}
		return p, err
	})
}

// receive reads n reload events, failing after a generous deadline.
func receive(t *testing.T, ch <-chan string, n int) []string {
	t.Helper()
	var got []string
	deadline := time.After(30 * time.Second)
	for range n {
		select {
		case s := <-ch:
			got = append(got, s)
		case <-deadline:
			t.Fatalf("received %v, want %d reloads", got, n)
		}
	}
	return got
}

func TestRollbackNeverAnnouncedCommitConverges(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	reloads := make(chan string, 64)
	apps, plugins := startInstances(t, db, 3, reloads)

	// A change rolled back: nothing is sent, nothing reloads.
	tx, err := txhooks.Begin(ctx, apps[0].DB())
	require.NoError(t, err)
	require.NoError(t, plugins[0].SaveCollectionTx(ctx, tx, schemasync.Collection{Name: "drafts", Fields: []string{"id"}}))
	require.NoError(t, tx.Rollback(ctx))

	// A committed change: the two other instances reload it, the sender does not.
	posts := schemasync.Collection{Name: "posts", Title: "Posts", Fields: []string{"id", "title"}}
	require.NoError(t, plugins[0].SaveCollection(ctx, posts))
	require.ElementsMatch(t, []string{"inst-1:posts:from:inst-0", "inst-2:posts:from:inst-0"}, receive(t, reloads, 2))
	for _, p := range plugins {
		got, ok := p.Collection("posts")
		require.True(t, ok)
		require.Equal(t, posts, got, "every instance, the sender included, has the committed row")
		require.Equal(t, []string{"posts"}, p.Names(), "the rolled-back collection is nowhere")
	}

	// A change from another instance converges everywhere else.
	posts.Fields = append(posts.Fields, "body")
	require.NoError(t, plugins[2].SaveCollection(ctx, posts))
	require.ElementsMatch(t, []string{"inst-0:posts:from:inst-2", "inst-1:posts:from:inst-2"}, receive(t, reloads, 2))
	for _, p := range plugins {
		got, _ := p.Collection("posts")
		require.Equal(t, []string{"id", "title", "body"}, got.Fields)
	}

	// Once every instance stopped: no reload was ever caused by the rollback,
	// and each instance reloaded exactly the changes of the others.
	for _, a := range apps {
		require.NoError(t, a.Stop(ctx))
	}
	require.Empty(t, reloads)
	require.EqualValues(t, []int64{1, 2, 1}, []int64{plugins[0].Reloads(), plugins[1].Reloads(), plugins[2].Reloads()})
}

func TestLoadReadsExistingAndBadInput(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	require.NoError(t, schemasync.EnsureSchema(ctx, db.Pool, ""))
	require.ErrorContains(t, schemasync.EnsureSchema(ctx, db.Pool, "Bad Schema"), "schemasync: ", "nothing is created in an invalid schema")
	_, err := db.Pool.Exec(ctx, `INSERT INTO collections (name, fields) VALUES ('users', '{id,email}')`)
	require.NoError(t, err)

	_, plugins := startInstances(t, db, 1, make(chan string, 1))
	got, ok := plugins[0].Collection("users")
	require.True(t, ok)
	require.Equal(t, []string{"id", "email"}, got.Fields)

	require.Error(t, plugins[0].SaveCollection(ctx, schemasync.Collection{}), "an empty name is refused")
	require.Equal(t, []string{"users"}, plugins[0].Names())

	// Refresh drops a collection deleted in the database.
	_, err = db.Pool.Exec(ctx, `DELETE FROM collections`)
	require.NoError(t, err)
	exists, err := plugins[0].Refresh(ctx, "users")
	require.NoError(t, err)
	require.False(t, exists)
	require.Empty(t, plugins[0].Names())

	unbound, err := schemasync.New("")
	require.NoError(t, err)
	require.ErrorIs(t, unbound.SaveCollection(ctx, schemasync.Collection{Name: "x"}), app.ErrPluginNotBound)
}
