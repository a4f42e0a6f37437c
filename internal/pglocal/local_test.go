package pglocal

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDurability proves the zero Options run the fast server the tests use and
// Durable runs PostgreSQL's production settings, which benchmarks rely on.
func TestDurability(t *testing.T) {
	if _, err := FindBinDir(); errors.Is(err, ErrNoPostgres) {
		t.Skip(err)
	}
	for _, tc := range []struct {
		name string
		opts *Options
		want string
	}{
		{"default", nil, "off"},
		{"durable", &Options{Durable: true}, "on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			srv, err := StartWith(ctx, tc.opts)
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, srv.Stop(context.Background())) })
			conn, err := pgx.Connect(ctx, srv.URL())
			require.NoError(t, err)
			defer conn.Close(ctx)
			var fsync, syncCommit, fpw string
			require.NoError(t, conn.QueryRow(ctx, `SELECT current_setting('fsync'), current_setting('synchronous_commit'),
				current_setting('full_page_writes')`).Scan(&fsync, &syncCommit, &fpw))
			require.Equal(t, []string{tc.want, tc.want, tc.want}, []string{fsync, syncCommit, fpw})
		})
	}
}
