package ohlcfile

import (
	"bytes"
	"errors"
	"io"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestReadAll(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		starts []int64
		trades []int64
		bad    []int
	}{
		{"kraken no header", "1677646800,23797.6,23819.4,23797.6,23799.7,10.42065301,41\n1677646860,23798.9,23798.9,23775.2,23777.6,0.95046539,19\n",
			[]int64{1677646800, 1677646860}, []int64{41, 19}, nil},
		{"binance header, no trades", "timestamp,open,high,low,close,volume\n2025-05-20T00:00:00Z,1,2,0.5,1.5,3\n1747699260000,1,2,0.5,1.5,3\n",
			[]int64{1747699200, 1747699260}, []int64{-1, -1}, nil},
		{"header with count column", "time,open,high,low,close,volume,count\n60,1,1,1,1,0,0\n",
			[]int64{60}, []int64{0}, nil},
		{"bad rows reported by line", "60,1,1,1,1,1,1\n120,x,1,1,1,1,1\n180,1,1,1,1,1\n240,1,1,1,1,NaN,1\n300,1,1,1,1,1,-2\n\"unterminated\n",
			[]int64{60, 180}, []int64{1, -1}, []int{2, 4, 5, 6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, bad := ReadAll(strings.NewReader(tt.in))
			if len(rows) != len(tt.starts) {
				t.Fatalf("rows %+v bad %v", rows, bad)
			}
			for i, r := range rows {
				if r.Start.Unix() != tt.starts[i] || r.Trades != tt.trades[i] || r.Start.Location() != time.UTC {
					t.Errorf("row %d = %+v", i, r)
				}
			}
			if len(bad) != len(tt.bad) {
				t.Fatalf("bad %v, want lines %v", bad, tt.bad)
			}
			for i, err := range bad {
				var le *LineError
				if !errors.As(err, &le) || le.Line != tt.bad[i] {
					t.Errorf("bad %d = %v, want line %d", i, err, tt.bad[i])
				}
			}
		})
	}
}

// TestByteOrderMark (issue 11 item 12): a CSV saved by a spreadsheet
// starts with a UTF-8 byte order mark; its header and rows are read.
func TestByteOrderMark(t *testing.T) {
	for _, in := range []string{
		"\xef\xbb\xbftimestamp,open,high,low,close,volume\n60,1,2,0.5,1.5,3\n",
		"\xef\xbb\xbf60,1,2,0.5,1.5,3,4\n",
	} {
		rows, bad := ReadAll(strings.NewReader(in))
		if len(rows) != 1 || len(bad) != 0 || rows[0].Start.Unix() != 60 {
			t.Errorf("%q: rows %+v, bad %v", in, rows, bad)
		}
	}
}

// longLine is one good row, a line of limit bytes of digits, and one good
// row, made as it is read.
type longLine struct {
	n, limit int
}

var digits = bytes.Repeat([]byte("7"), 64<<10)

func (r *longLine) Read(p []byte) (int, error) {
	head, tail := "60,1,2,0.5,1.5,3,4\n", "\n120,1,2,0.5,1.5,3,4\n"
	var n int
	switch {
	case r.n < len(head):
		n = copy(p, head[r.n:])
	case r.n < len(head)+r.limit:
		n = copy(p[:min(len(p), len(head)+r.limit-r.n)], digits)
	case r.n < len(head)+r.limit+len(tail):
		n = copy(p, tail[r.n-len(head)-r.limit:])
	default:
		return 0, io.EOF
	}
	r.n += n
	return n, nil
}

// TestLineTooLong (issue 11 item 12): a 200 MB line is reported with its
// number and skipped in bounded memory; the rows around it are read.
func TestLineTooLong(t *testing.T) {
	src := &longLine{limit: 200 << 20}
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	rows, bad := ReadAll(src)
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if len(rows) != 2 || rows[1].Start.Unix() != 120 || rows[1].Line != 3 {
		t.Fatalf("rows %+v", rows)
	}
	var le *LineError
	if len(bad) != 1 || !errors.As(bad[0], &le) || le.Line != 2 || le.Reason != ReasonTooLong {
		t.Fatalf("bad %v, want line 2 too long", bad)
	}
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 1<<20 {
		t.Errorf("reading allocated %d bytes for a 200 MB line, want it bounded", grown)
	}
}

// TestReasons: every refused row says why, with a bounded label.
func TestReasons(t *testing.T) {
	in := "60,1,1,1,1,1,1\n120,x,1,1,1,1,1\nyesterday,1,1,1,1,1,1\n180,1,1\n\"240,1,1,1,1,1,1\n"
	_, bad := ReadAll(strings.NewReader(in))
	want := []string{ReasonNumber, ReasonTimestamp, ReasonMissing, ReasonSyntax}
	if len(bad) != len(want) {
		t.Fatalf("bad %v", bad)
	}
	for i, err := range bad {
		var le *LineError
		if !errors.As(err, &le) || le.Reason != want[i] || le.Line != i+2 {
			t.Errorf("bad %d = %v (%+v), want %s at line %d", i, err, le, want[i], i+2)
		}
	}
}

// FuzzReader: any input yields rows with finite, non-negative values and
// increasing line numbers, or line errors, and never panics.
func FuzzReader(f *testing.F) {
	f.Add([]byte("1677646800,23797.6,23819.4,23797.6,23799.7,10.42065301,41\n"))
	f.Add([]byte("\xef\xbb\xbftimestamp,open,high,low,close,volume\n2025-05-20T00:00:00Z,1,2,0.5,1.5,3\n"))
	f.Add([]byte("time,open,high,low,close,volume,count\n\"60\",1,1,1,1,0,0\r\n\n,,,\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rd := NewReader(bytes.NewReader(data))
		last := 0
		for {
			row, err := rd.Next()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				var le *LineError
				if !errors.As(err, &le) {
					t.Fatalf("error %v is not a LineError", err)
				}
				if le.Line <= last || le.Reason == "" {
					t.Fatalf("line error %+v after line %d", le, last)
				}
				last = le.Line
				continue
			}
			if row.Line <= last {
				t.Fatalf("row at line %d after line %d", row.Line, last)
			}
			last = row.Line
			for _, v := range []float64{row.Open, row.High, row.Low, row.Close, row.Volume} {
				if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
					t.Fatalf("row %+v has value %v", row, v)
				}
			}
		}
	})
}
