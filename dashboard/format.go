package dashboard

import (
	"fmt"
	"time"
)

// Chart is a small bar chart of per-minute counts, drawn as inline SVG by
// the Channels page's template.
type Chart struct {
	Width, Height int
	Bars          []Bar
	Max           int64
}

// Bar is one bar of a [Chart].
type Bar struct {
	X, Y, W, H int
	Count      int64
}

const chartW, chartH, barW = 150, 30, 10

func newChart(counts []int64) Chart {
	c := Chart{Width: chartW, Height: chartH}
	for _, n := range counts {
		c.Max = max(c.Max, n)
	}
	for i, n := range counts {
		h := 0
		if c.Max > 0 {
			h = int(n * (chartH - 2) / c.Max)
		}
		if n > 0 && h == 0 {
			h = 1
		}
		c.Bars = append(c.Bars, Bar{X: i * barW, Y: chartH - h, W: barW - 1, H: h, Count: n})
	}
	return c
}

// formatMillis renders a duration in milliseconds for people; negative
// means none.
func formatMillis(ms int64) string {
	if ms < 0 {
		return "none"
	}
	d := time.Duration(ms) * time.Millisecond
	switch {
	case d < time.Second:
		return fmt.Sprintf("%d ms", ms)
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

func formatBytes(n int64) string {
	switch {
	case n < 1024:
		return fmt.Sprintf("%d B", n)
	case n < 1024*1024:
		return fmt.Sprintf("%.1f KiB", float64(n)/1024)
	default:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1024*1024))
	}
}

// formatPercent renders a rate in [0, 1] as a percentage.
func formatPercent(r float64) string { return fmt.Sprintf("%.1f%%", 100*r) }
