package evaluation

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"cryptostream/ingest/ohlcfile"
)

// Candle is the part of a candle the evaluation reads.
type Candle struct {
	Start                  time.Time
	Open, High, Low, Close float64
	Volume                 float64
}

// File is a candle file read for evaluation.
type File struct {
	Name     string
	Interval time.Duration
	Candles  []Candle
	// Bad counts rows that could not be read, Duplicates rows whose start
	// repeats an earlier one (the first is kept).
	Bad, Duplicates int
}

// ErrTooShort is a file too short to tell its interval.
var ErrTooShort = errors.New("evaluation: too few candles")

// ReadFile reads a candle file of either layout ohlcfile knows, sorts it
// by start and infers the interval as the most common step.
func ReadFile(path string) (File, error) {
	f, err := os.Open(path)
	if err != nil {
		return File{}, fmt.Errorf("evaluation: %w", err)
	}
	defer f.Close()
	return Read(path, f)
}

// Read is ReadFile on a reader.
func Read(name string, r io.Reader) (File, error) {
	rows, bad := ohlcfile.ReadAll(r)
	out := File{Name: name, Bad: len(bad)}
	for _, e := range bad {
		var le *ohlcfile.LineError
		if !errors.As(e, &le) {
			return out, fmt.Errorf("evaluation: read %s: %w", name, e)
		}
	}
	for _, row := range rows {
		if !(row.Close > 0) {
			out.Bad++
			continue
		}
		out.Candles = append(out.Candles, Candle{Start: row.Start, Open: row.Open, High: row.High, Low: row.Low, Close: row.Close, Volume: row.Volume})
	}
	slices.SortStableFunc(out.Candles, func(a, b Candle) int { return a.Start.Compare(b.Start) })
	n := len(out.Candles)
	out.Candles = slices.CompactFunc(out.Candles, func(a, b Candle) bool { return a.Start.Equal(b.Start) })
	out.Duplicates = n - len(out.Candles)
	if len(out.Candles) < 3 {
		return out, fmt.Errorf("%w: %d in %s", ErrTooShort, len(out.Candles), name)
	}
	steps := map[time.Duration]int{}
	for i := 1; i < len(out.Candles); i++ {
		steps[out.Candles[i].Start.Sub(out.Candles[i-1].Start)]++
	}
	best := 0
	for d, k := range steps {
		if k > best || k == best && d < out.Interval {
			out.Interval, best = d, k
		}
	}
	return out, nil
}
