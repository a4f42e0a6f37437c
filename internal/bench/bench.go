// Package bench measures pgcoord's operations side by side with the raw
// PostgreSQL primitive they are built on, in the same run on the same server,
// and reports ratios. `pgcoord bench` prints its rows; each package's
// benchmark lives in its own file here (cache.go, listen.go, queue.go, lock.go).
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Row is one measured operation.
type Row struct {
	// Name is stable across runs, e.g. "cache.get.c1".
	Name string `json:"name"`
	// Pgcoord is pgcoord's figure, Baseline the raw primitive's, both in Unit.
	Pgcoord      float64 `json:"pgcoord"`
	Baseline     float64 `json:"baseline"`
	BaselineName string  `json:"baseline_name"`
	// Unit is "us" (a latency, lower is better), "ops/s" (a throughput,
	// higher is better), "reads" (a count of statements, lower is better) or
	// "share" (a fairness fraction, higher is better; 1.0 = even).
	Unit string `json:"unit"`
	// CostRatio is pgcoord's cost over the baseline's: latency ÷ latency, or
	// baseline throughput (or share) ÷ pgcoord's. 1.0 means as fast as the raw primitive.
	CostRatio float64 `json:"cost_ratio"`
}

// Latency builds a latency row (microseconds).
func Latency(name, baselineName string, pgcoord, baseline time.Duration) Row {
	p, b := float64(pgcoord.Nanoseconds())/1e3, float64(baseline.Nanoseconds())/1e3
	return Row{Name: name, Pgcoord: p, Baseline: b, BaselineName: baselineName, Unit: "us", CostRatio: ratio(p, b)}
}

// Throughput builds a throughput row (operations per second).
func Throughput(name, baselineName string, pgcoord, baseline float64) Row {
	return Row{Name: name, Pgcoord: pgcoord, Baseline: baseline, BaselineName: baselineName, Unit: "ops/s", CostRatio: ratio(baseline, pgcoord)}
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// WriteJSON writes rows to w, one JSON object per line.
func WriteJSON[T any](w io.Writer, rows []T) error {
	enc := json.NewEncoder(w)
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// Options bounds a benchmark run.
type Options struct {
	// Ops is the number of operations per measurement. Defaults to 2000.
	Ops int
	// Schema is pgcoord's schema. Defaults to "pgcoord".
	Schema string
	// Prefix names everything the run creates, so runs do not collide.
	Prefix string
}

// WithDefaults fills zero fields.
func (o Options) WithDefaults() Options {
	if o.Ops <= 0 {
		o.Ops = 2000
	}
	if o.Schema == "" {
		o.Schema = "pgcoord"
	}
	if o.Prefix == "" {
		o.Prefix = fmt.Sprintf("bench%d", time.Now().UnixNano())
	}
	return o
}

// Suite is one package's benchmark: it returns its rows.
type Suite func(ctx context.Context, pool *pgxpool.Pool, opts Options) ([]Row, error)

// Sample holds measured latencies.
type Sample []time.Duration

// Percentile returns the p-th percentile (0 < p <= 100).
func (s Sample) Percentile(p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	i := int(float64(len(c)-1) * p / 100)
	return c[i]
}

// Run calls op n times split over conc goroutines and returns every latency and
// the throughput in operations per second. The first error stops the run.
func Run(ctx context.Context, n, conc int, op func(ctx context.Context, i int) error) (Sample, float64, error) {
	if conc < 1 {
		conc = 1
	}
	lat := make(Sample, n)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	start := time.Now()
	per := n / conc
	for g := 0; g < conc; g++ {
		lo, hi := g*per, (g+1)*per
		if g == conc-1 {
			hi = n
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				t0 := time.Now()
				if err := op(ctx, i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	return lat, float64(n) / elapsed.Seconds(), firstErr
}
