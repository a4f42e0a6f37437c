package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/bench"
	"github.com/pgcoord/pgcoord/internal/pgtest"
)

// TestPeersRows is a smoke run (a few operations): every row has both
// figures. It measures nothing.
func TestPeersRows(t *testing.T) {
	db := pgtest.NewDB(t)
	t.Setenv("PGCOORD_DATABASE_URL", db.URL)
	ctx := t.Context()
	var out, errOut bytes.Buffer
	require.NoError(t, run(ctx, []string{"watermill", "--ops", "8", "--json"}, &out, &errOut), errOut.String())
	names := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r bench.Row
		require.NoError(t, json.Unmarshal([]byte(line), &r), line)
		require.Positive(t, r.Pgcoord, line)
		require.Positive(t, r.Baseline, line)
		names[r.Name] = true
	}
	for _, poll := range []string{"poll1ms", "default"} {
		require.True(t, names["watermill.deliver_p50."+poll], out.String())
		require.True(t, names["watermill.throughput_c1."+poll], out.String())
	}
}

func TestMain(m *testing.M) { pgtest.Main(m) }
