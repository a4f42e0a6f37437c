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

// TestPeersRows is a smoke run (a few operations): it prints exactly the rows
// BENCHMARKS.md's peers table lists, each with both figures. It measures
// nothing.
func TestPeersRows(t *testing.T) {
	db := pgtest.NewDB(t)
	t.Setenv("PGCOORD_DATABASE_URL", db.URL)
	ctx := t.Context()
	var out, errOut bytes.Buffer
	require.NoError(t, run(ctx, []string{"--ops", "8", "--json"}, &out, &errOut), errOut.String())
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r bench.Row
		require.NoError(t, json.Unmarshal([]byte(line), &r), line)
		require.Positive(t, r.Pgcoord, line)
		require.Positive(t, r.Baseline, line)
		names = append(names, r.Name)
	}
	require.ElementsMatch(t, []string{
		"watermill.deliver_p50.poll1ms", "watermill.throughput_c1.poll1ms",
		"watermill.deliver_p50.default", "watermill.throughput_c1.default",
		"river.throughput", "river.latency_p50", "river.latency_p99",
		"river.throughput_defaults", "river.latency_p50_defaults",
	}, names)
}

func TestMain(m *testing.M) { pgtest.Main(m) }
