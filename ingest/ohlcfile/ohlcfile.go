// Package ohlcfile reads OHLC history files: Kraken's OHLCVT downloads (no
// header: timestamp,open,high,low,close,volume,trades) and CSVs with a
// header (timestamp,open,high,low,close,volume[,trades]). It owns only the
// parsing, so the import command and krakensim read files the same way.
package ohlcfile

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// Row is one candle of a file. Start is the open time.
type Row struct {
	Line   int
	Start  time.Time
	Open   float64
	High   float64
	Low    float64
	Close  float64
	Volume float64
	Trades int64 // -1 when the file has no trades column
}

// LineError is a row that could not be read; reading goes on after it.
type LineError struct {
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// Reader yields the rows of one file.
type Reader struct {
	r       *csv.Reader
	cols    map[string]int
	started bool
}

// NewReader reads r, detecting a header on the first line.
func NewReader(r io.Reader) *Reader {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	cr.TrimLeadingSpace = true
	return &Reader{r: cr}
}

var krakenCols = map[string]int{"timestamp": 0, "open": 1, "high": 2, "low": 3, "close": 4, "volume": 5, "trades": 6}

// Next returns the next row, a *LineError for a bad row (call Next again to
// go on), or io.EOF.
func (rd *Reader) Next() (Row, error) {
	for {
		rec, err := rd.r.Read()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return Row{}, io.EOF
			}
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return Row{}, &LineError{Line: pe.Line, Err: pe.Err}
			}
			return Row{}, err
		}
		line, _ := rd.r.FieldPos(0)
		if !rd.started {
			rd.started = true
			if cols, ok := header(rec); ok {
				rd.cols = cols
				continue
			}
			rd.cols = krakenCols
		}
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		row, err := rd.parse(rec)
		if err != nil {
			return Row{}, &LineError{Line: line, Err: err}
		}
		row.Line = line
		return row, nil
	}
}

func header(rec []string) (map[string]int, bool) {
	if len(rec) == 0 {
		return nil, false
	}
	if _, err := strconv.ParseFloat(strings.TrimSpace(rec[0]), 64); err == nil {
		return nil, false
	}
	cols := map[string]int{}
	for i, name := range rec {
		name = strings.ToLower(strings.TrimSpace(name))
		switch name {
		case "time", "date", "open_time", "timestamp":
			name = "timestamp"
		case "count", "trade_count", "number_of_trades":
			name = "trades"
		}
		cols[name] = i
	}
	return cols, true
}

func (rd *Reader) parse(rec []string) (Row, error) {
	field := func(name string) (string, bool) {
		i, ok := rd.cols[name]
		if !ok || i >= len(rec) {
			return "", false
		}
		return strings.TrimSpace(rec[i]), true
	}
	var row Row
	ts, ok := field("timestamp")
	if !ok {
		return row, errors.New("no timestamp")
	}
	start, err := parseTime(ts)
	if err != nil {
		return row, err
	}
	row.Start = start
	for _, f := range []struct {
		name string
		dst  *float64
	}{{"open", &row.Open}, {"high", &row.High}, {"low", &row.Low}, {"close", &row.Close}, {"volume", &row.Volume}} {
		s, ok := field(f.name)
		if !ok {
			return row, fmt.Errorf("no %s", f.name)
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return row, fmt.Errorf("%s %q: not a number", f.name, s)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return row, fmt.Errorf("%s is %v", f.name, v)
		}
		*f.dst = v
	}
	row.Trades = -1
	if s, ok := field("trades"); ok && s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return row, fmt.Errorf("trades %q", s)
		}
		row.Trades = n
	}
	return row, nil
}

// parseTime accepts unix seconds or milliseconds, or RFC 3339.
func parseTime(s string) (time.Time, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n > 1e12 {
			return time.UnixMilli(n).UTC(), nil
		}
		return time.Unix(n, 0).UTC(), nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return time.Unix(int64(f), 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("timestamp %q: not unix seconds or RFC 3339", s)
	}
	return t.UTC(), nil
}

// ReadAll reads every good row of r and returns the bad ones' errors beside.
func ReadAll(r io.Reader) ([]Row, []error) {
	rd := NewReader(r)
	var rows []Row
	var bad []error
	for {
		row, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return rows, bad
		}
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) {
				return rows, append(bad, err)
			}
			bad = append(bad, err)
			continue
		}
		rows = append(rows, row)
	}
}
