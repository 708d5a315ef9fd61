package ohlcfile

import (
	"errors"
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
