// Package ohlcfile reads OHLC history files: Kraken's OHLCVT downloads (no
// header: timestamp,open,high,low,close,volume,trades) and CSVs with a
// header (timestamp,open,high,low,close,volume[,trades]). It owns only the
// parsing, so the import command and krakensim read files the same way.
package ohlcfile

import (
	"bufio"
	"bytes"
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

// MaxLine bounds a line's length in bytes. An OHLC row is under 200 bytes;
// a longer line is reported and skipped without being held in memory.
const MaxLine = 4096

// Reasons a row is refused, the bounded labels of LineError.
const (
	ReasonSyntax    = "syntax"        // quotes that do not close
	ReasonTooLong   = "line too long" // above MaxLine
	ReasonTimestamp = "bad timestamp"
	ReasonNumber    = "bad number"
	ReasonMissing   = "missing field"
)

// LineError is a row that could not be read; reading goes on after it.
type LineError struct {
	Line   int
	Reason string
	Err    error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// Reader yields the rows of one file.
type Reader struct {
	r       *bufio.Reader
	line    int
	rec     []string
	cols    map[string]int
	started bool
}

// NewReader reads r, detecting a header on the first line. A UTF-8 byte
// order mark before it is skipped (spreadsheets write one).
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, MaxLine+2)}
}

var krakenCols = map[string]int{"timestamp": 0, "open": 1, "high": 2, "low": 3, "close": 4, "volume": 5, "trades": 6}

// readLine returns the next line without its end, or a *LineError for a
// line above MaxLine (whose rest is skipped), or io.EOF.
func (rd *Reader) readLine() (string, error) {
	b, err := rd.r.ReadSlice('\n')
	if len(b) == 0 && err != nil {
		if errors.Is(err, io.EOF) {
			return "", io.EOF
		}
		return "", err
	}
	rd.line++
	if errors.Is(err, bufio.ErrBufferFull) {
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = rd.r.ReadSlice('\n')
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		return "", &LineError{Line: rd.line, Reason: ReasonTooLong, Err: fmt.Errorf("longer than %d bytes, skipped", MaxLine)}
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	if rd.line == 1 {
		b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// split cuts a CSV line into fields. OHLC files hold numbers and names,
// so a quoted field is unquoted but a comma inside quotes is not kept.
func (rd *Reader) split(line string) ([]string, error) {
	rd.rec = rd.rec[:0]
	for f := range strings.SplitSeq(line, ",") {
		f = strings.TrimSpace(f)
		if strings.HasPrefix(f, "\"") {
			if len(f) < 2 || !strings.HasSuffix(f, "\"") {
				return nil, errors.New("quoted field does not close")
			}
			f = strings.TrimSpace(strings.ReplaceAll(f[1:len(f)-1], "\"\"", "\""))
		}
		rd.rec = append(rd.rec, f)
	}
	return rd.rec, nil
}

// Next returns the next row, a *LineError for a bad row (call Next again to
// go on), or io.EOF.
func (rd *Reader) Next() (Row, error) {
	for {
		text, err := rd.readLine()
		if err != nil {
			return Row{}, err
		}
		if strings.TrimSpace(text) == "" {
			continue
		}
		line := rd.line
		rec, err := rd.split(text)
		if err != nil {
			return Row{}, &LineError{Line: line, Reason: ReasonSyntax, Err: err}
		}
		if !rd.started {
			rd.started = true
			if cols, ok := header(rec); ok {
				rd.cols = cols
				continue
			}
			rd.cols = krakenCols
		}
		row, err := rd.parse(rec)
		if err != nil {
			return Row{}, &LineError{Line: line, Reason: reasonOf(err), Err: err}
		}
		row.Line = line
		return row, nil
	}
}

// fieldError carries a LineError reason from parse.
type fieldError struct {
	reason string
	err    error
}

func (e *fieldError) Error() string { return e.err.Error() }

func reasonOf(err error) string {
	var fe *fieldError
	if errors.As(err, &fe) {
		return fe.reason
	}
	return ReasonSyntax
}

func fieldErr(reason, format string, args ...any) error {
	return &fieldError{reason, fmt.Errorf(format, args...)}
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
		return row, fieldErr(ReasonMissing, "no timestamp")
	}
	start, err := parseTime(ts)
	if err != nil {
		return row, &fieldError{ReasonTimestamp, err}
	}
	row.Start = start
	for _, f := range []struct {
		name string
		dst  *float64
	}{{"open", &row.Open}, {"high", &row.High}, {"low", &row.Low}, {"close", &row.Close}, {"volume", &row.Volume}} {
		s, ok := field(f.name)
		if !ok {
			return row, fieldErr(ReasonMissing, "no %s", f.name)
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return row, fieldErr(ReasonNumber, "%s %q: not a number", f.name, s)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return row, fieldErr(ReasonNumber, "%s is %v", f.name, v)
		}
		*f.dst = v
	}
	row.Trades = -1
	if s, ok := field("trades"); ok && s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return row, fieldErr(ReasonNumber, "trades %q", s)
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
