package pgcoordtest_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/pgcoordtest"
)

// logRecorder keeps every log record's message and attributes as text.
type logRecorder struct {
	mu   *sync.Mutex
	recs *[]string
}

func (r logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r logRecorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Message)
	rec.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	r.mu.Lock()
	*r.recs = append(*r.recs, b.String())
	r.mu.Unlock()
	return nil
}
func (r logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r logRecorder) WithGroup(string) slog.Handler      { return r }

// The cluster's instances stop while their pools are still open: a stop
// that finds its pool closed cannot release locks or drain its queue, and
// its background loops log "closed pool" until they give up.
func TestClusterStopsBeforeItsPoolsClose(t *testing.T) {
	t.Parallel()
	db := pgcoordtest.NewDB(t)
	var mu sync.Mutex
	var recs []string
	t.Run("cluster", func(t *testing.T) {
		pgcoordtest.StartCluster(t, db, 2, func(_ int, cfg *app.Config) {
			cfg.Logger = slog.New(logRecorder{mu: &mu, recs: &recs})
		})
	}) // the subtest's cleanups (stop, close pools) have run
	mu.Lock()
	defer mu.Unlock()
	for _, r := range recs {
		require.NotContains(t, r, "closed pool")
	}
}
