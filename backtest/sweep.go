package backtest

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sync/errgroup"
)

// Dim is one swept setting of the strategy and its values.
type Dim struct {
	Name   string
	Values []float64
}

// sweepable are the strategy settings a sweep may vary.
var sweepable = map[string]func(*Strategy, float64){
	"fees":      func(s *Strategy, v float64) { s.Fees = v },
	"slippage":  func(s *Strategy, v float64) { s.Slippage = v },
	"threshold": func(s *Strategy, v float64) { s.Threshold = v },
}

// ParseSweep reads "fees=0,0.001" "threshold=0,0.0005" into dimensions.
func ParseSweep(args []string) ([]Dim, error) {
	var dims []Dim
	for _, a := range args {
		name, list, ok := strings.Cut(a, "=")
		if _, known := sweepable[name]; !ok || !known {
			return nil, fmt.Errorf("%w: sweep %q: want name=v1,v2,... with name one of fees, slippage, threshold", ErrSettings, a)
		}
		if slices.ContainsFunc(dims, func(d Dim) bool { return d.Name == name }) {
			return nil, fmt.Errorf("%w: sweep: %s given twice", ErrSettings, name)
		}
		d := Dim{Name: name}
		for _, s := range strings.Split(list, ",") {
			v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil || v < 0 || v >= 1 {
				return nil, fmt.Errorf("%w: sweep %s: %q: want a number from 0 to below 1", ErrSettings, name, s)
			}
			d.Values = append(d.Values, v)
		}
		dims = append(dims, d)
	}
	if n := gridSize(dims); n > 10000 {
		return nil, fmt.Errorf("%w: sweep of %d settings: at most 10000", ErrSettings, n)
	}
	return dims, nil
}

func gridSize(dims []Dim) int {
	n := 1
	for _, d := range dims {
		n *= len(d.Values)
	}
	return n
}

// Sweep is a grid of strategies over one run, best first.
type Sweep struct {
	Warning string        `json:"warning"`
	Results []SweepResult `json:"results"`
}

// SweepResult is one point of the grid and its rank (1 is the best total
// return; ties keep the grid's order).
type SweepResult struct {
	Rank     int         `json:"rank"`
	Strategy Strategy    `json:"strategy"`
	Trading  Performance `json:"trading"`
}

// Sweep trades every strategy of the grid around base over the run's one
// replay, in parallel, and ranks them.
func (r *Run) Sweep(ctx context.Context, base Strategy, dims []Dim) (Sweep, error) {
	grid := []Strategy{base}
	for _, d := range dims {
		var next []Strategy
		for _, s := range grid {
			for _, v := range d.Values {
				sweepable[d.Name](&s, v)
				next = append(next, s)
			}
		}
		grid = next
	}
	out := make([]SweepResult, len(grid))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, s := range grid {
		g.Go(func() error {
			if err := ctx.Err(); err != nil {
				return err
			}
			c, _ := r.Trade(s)
			out[i] = SweepResult{Strategy: s, Trading: c.Performance}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return Sweep{}, err
	}
	slices.SortStableFunc(out, func(a, b SweepResult) int {
		switch {
		case a.Trading.TotalReturn > b.Trading.TotalReturn:
			return -1
		case a.Trading.TotalReturn < b.Trading.TotalReturn:
			return 1
		}
		return 0
	})
	for i := range out {
		out[i].Rank = i + 1
	}
	return Sweep{
		Warning: fmt.Sprintf("The best of %d settings is an optimistic estimate: it was chosen on the very candles it is scored on, "+
			"and the more settings tried, the more its lead is luck. Judge the chosen setting on a later range before trusting it.", len(grid)),
		Results: out,
	}, nil
}
