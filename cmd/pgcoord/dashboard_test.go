package main

import (
	"context"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// lineWriter hands each written chunk to a channel (the command prints
// its URL in one write).
type lineWriter struct {
	mu  sync.Mutex
	buf strings.Builder
	ch  chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.buf.Write(p)
	w.mu.Unlock()
	select {
	case w.ch <- string(p):
	default:
	}
	return len(p), nil
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// pgcoord dashboard serves the pages of a live database until
// interrupted, and warns loudly only when bound beyond loopback.
func TestDashboardCommand(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	for _, tc := range []struct {
		addr string
		warn bool
	}{{"127.0.0.1:0", false}, {"0.0.0.0:0", true}} {
		t.Run(tc.addr, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			out := &lineWriter{ch: make(chan string, 4)}
			errOut := &lineWriter{ch: make(chan string, 16)}
			code := make(chan int, 1)
			go func() {
				code <- run(ctx, []string{"dashboard", "--addr", tc.addr, "--database-url", db.URL}, out, errOut)
			}()
			t.Cleanup(func() {
				cancel()
				require.Zero(t, <-code, errOut.String())
			})
			var url string
			re := regexp.MustCompile(`http://\S+/`)
			for url == "" {
				select {
				case line := <-out.ch:
					url = re.FindString(line)
				case c := <-code:
					code <- c
					t.Fatalf("pgcoord dashboard exited with %d: %s", c, errOut.String())
				}
			}
			requireDashboardAnswers(t, url)
			require.Equal(t, tc.warn, strings.Contains(errOut.String(), "WARNING: the dashboard listens on"), errOut.String())
		})
	}
}
