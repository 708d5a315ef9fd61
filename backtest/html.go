package backtest

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"slices"
	"strings"
	"time"
)

//go:embed report.html.tmpl
var pageSource string

var page = template.Must(template.New("report").Funcs(template.FuncMap{
	"pct":  func(v float64) string { return fmt.Sprintf("%.2f%%", 100*v) },
	"num":  func(v float64) string { return fmt.Sprintf("%.4g", v) },
	"opt":  opt,
	"dict": func(c chart, p map[string]any) []any { return []any{c, p} },
	"date": func(t time.Time) string {
		return t.UTC().Format("2006-01-02 15:04")
	},
}).Parse(pageSource))

// Chart geometry, in SVG user units.
const (
	chartW, chartH = 960.0, 280.0
	padL, padR     = 64.0, 12.0
	padT, padB     = 10.0, 24.0
	maxPoints      = 1500
)

// chart is one SVG chart's drawing.
type chart struct {
	Lines  []line
	Band   string // polygon points, empty for none
	Bars   []bar
	YTicks []tick
	XTicks []tick
}

type line struct {
	Points, Class, Label string
}

type bar struct {
	X, Y, W, H float64
	Label      string
}

type tick struct {
	Pos   float64
	Label string
}

// scale maps data to the plot area.
type scale struct{ x0, x1, y0, y1 float64 }

func (s scale) x(v float64) float64 {
	if s.x1 == s.x0 {
		return padL
	}
	return padL + (v-s.x0)/(s.x1-s.x0)*(chartW-padL-padR)
}

func (s scale) y(v float64) float64 {
	if s.y1 == s.y0 {
		return chartH / 2
	}
	return chartH - padB - (v-s.y0)/(s.y1-s.y0)*(chartH-padT-padB)
}

func (s scale) ticks(times bool) (ys, xs []tick) {
	for i := range 5 {
		v := s.y0 + float64(i)/4*(s.y1-s.y0)
		ys = append(ys, tick{Pos: s.y(v), Label: fmt.Sprintf("%.5g", v)})
		if times {
			t := s.x0 + float64(i)/4*(s.x1-s.x0)
			xs = append(xs, tick{Pos: s.x(t), Label: time.Unix(int64(t), 0).UTC().Format("01-02 15:04")})
		}
	}
	return ys, xs
}

// every is the stride that keeps a series of n points under maxPoints.
func every(n int) int { return max(1, (n+maxPoints-1)/maxPoints) }

func polyline(s scale, xs, ys []float64) string {
	var b strings.Builder
	k := every(len(xs))
	for i := 0; i < len(xs); i += k {
		fmt.Fprintf(&b, "%.1f,%.1f ", s.x(xs[i]), s.y(ys[i]))
	}
	if n := len(xs); n > 0 && (n-1)%k != 0 {
		fmt.Fprintf(&b, "%.1f,%.1f", s.x(xs[n-1]), s.y(ys[n-1]))
	}
	return strings.TrimSpace(b.String())
}

func bounds(series ...[]float64) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, s := range series {
		for _, v := range s {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	if math.IsInf(lo, 0) {
		return 0, 1
	}
	pad := (hi - lo) * 0.03
	return lo - pad, hi + pad
}

func unix(ts []time.Time) []float64 {
	out := make([]float64, len(ts))
	for i, t := range ts {
		out[i] = float64(t.Unix())
	}
	return out
}

func equityChart(strat, hold Curve) chart {
	xs := unix(strat.Starts)
	lo, hi := bounds(strat.Equity, hold.Equity)
	s := scale{x0: xs[0], x1: xs[len(xs)-1], y0: lo, y1: hi}
	c := chart{Lines: []line{
		{Points: polyline(s, xs, hold.Equity), Class: "hold", Label: "buy and hold"},
		{Points: polyline(s, xs, strat.Equity), Class: "strategy", Label: "strategy"},
	}}
	c.YTicks, c.XTicks = s.ticks(true)
	return c
}

func priceChart(r *Run) chart {
	bars := r.InRange()
	xs, closes := make([]float64, len(bars)), make([]float64, len(bars))
	for i, b := range bars {
		xs[i], closes[i] = float64(b.Start.Unix()), b.Close
	}
	var px, pred, lower, upper []float64
	for _, p := range r.Predictions {
		px = append(px, float64(p.Target.Unix()))
		pred = append(pred, p.PredictedClose)
		lower, upper = append(lower, p.Lower), append(upper, p.Upper)
	}
	lo, hi := bounds(closes, lower, upper)
	s := scale{x0: xs[0], x1: xs[len(xs)-1], y0: lo, y1: hi}
	c := chart{Lines: []line{{Points: polyline(s, xs, closes), Class: "price", Label: "close"}}}
	if len(px) > 0 {
		s.x1 = math.Max(s.x1, px[len(px)-1])
		c.Lines[0].Points = polyline(s, xs, closes)
		c.Lines = append(c.Lines, line{Points: polyline(s, px, pred), Class: "pred", Label: "predicted close at its target"})
		rev := func(v []float64) []float64 { w := slices.Clone(v); slices.Reverse(w); return w }
		c.Band = polyline(s, px, upper) + " " + polyline(s, rev(px), rev(lower))
	}
	c.YTicks, c.XTicks = s.ticks(true)
	return c
}

func errorChart(errs []float64) chart {
	if len(errs) == 0 {
		return chart{}
	}
	lo, hi := bounds(errs)
	// Symmetric about zero, so that a bias shows.
	m := math.Max(math.Abs(lo), math.Abs(hi))
	const bins = 60
	counts := make([]int, bins)
	for _, e := range errs {
		counts[min(bins-1, int((e+m)/(2*m)*bins))]++
	}
	top := float64(slices.Max(counts))
	s := scale{x0: -m, x1: m, y0: 0, y1: top}
	var c chart
	w := (chartW - padL - padR) / bins
	for i, n := range counts {
		x := s.x(-m + float64(i)*2*m/bins)
		c.Bars = append(c.Bars, bar{X: x, Y: s.y(float64(n)), W: math.Max(w-1, 0.5), H: chartH - padB - s.y(float64(n)),
			Label: fmt.Sprintf("%d errors from %.3g to %.3g", n, -m+float64(i)*2*m/bins, -m+float64(i+1)*2*m/bins)})
	}
	c.YTicks, _ = s.ticks(false)
	for i := range 5 {
		v := -m + float64(i)/4*2*m
		c.XTicks = append(c.XTicks, tick{Pos: s.x(v), Label: fmt.Sprintf("%.2g", v)})
	}
	return c
}

// HTML is the report as one self-contained page: the figures, the equity
// curve against buy-and-hold, the price with the predictions and their
// band, and the distribution of the errors, with nothing to fetch.
func HTML(r *Run, rep Report) ([]byte, error) {
	strat, hold := r.Trade(rep.Strategy)
	_, _, errs := r.score()
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("backtest: html: %w", err)
	}
	var b bytes.Buffer
	err = page.Execute(&b, map[string]any{
		"R": rep, "Equity": equityChart(strat, hold), "Price": priceChart(r), "Errors": errorChart(errs),
		"W": chartW, "H": chartH, "PadL": padL, "Bottom": chartH - padB, "JSON": string(js),
	})
	if err != nil {
		return nil, fmt.Errorf("backtest: html: %w", err)
	}
	return b.Bytes(), nil
}
