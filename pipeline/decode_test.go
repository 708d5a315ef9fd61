package pipeline_test

import (
	"errors"
	"testing"
	"time"

	"cryptostream/pipeline"
	"cryptostream/streams"
)

// TestDecode: a message's Value is taken when it holds the type asked, and
// validated as a decoded event is; otherwise Data is decoded, as the
// Runner's messages (which carry no Value) always are.
func TestDecode(t *testing.T) {
	c := streams.Candle{Schema: streams.Schema{V: streams.SchemaVersion}, Symbol: "BTC/USD", Interval: streams.Interval1m,
		Start: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), Open: 10, High: 12, Low: 9, Close: 11, VWAP: 11, Volume: 1, Trades: 1, Quality: streams.QualityLive}
	data, err := streams.Encode(&c)
	if err != nil {
		t.Fatal(err)
	}
	other := c
	other.Close = 12
	for _, tc := range []struct {
		name  string
		m     pipeline.Msg
		close float64
	}{
		{"value", pipeline.Msg{Value: &other}, 12},
		{"value over data", pipeline.Msg{Data: data, Value: &other}, 12},
		{"data", pipeline.Msg{Data: data}, 11},
		{"value of another type", pipeline.Msg{Data: data, Value: &streams.Tick{}}, 11},
		{"nil pointer", pipeline.Msg{Data: data, Value: (*streams.Candle)(nil)}, 11},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pipeline.Decode[streams.Candle](tc.m)
			if err != nil || got.Close != tc.close {
				t.Fatalf("close %v, err %v; want %v", got.Close, err, tc.close)
			}
		})
	}
	bad := c
	bad.High = 8 // below the low
	if _, err := pipeline.Decode[streams.Candle](pipeline.Msg{Value: &bad}); !errors.Is(err, streams.ErrInvalidEvent) {
		t.Fatalf("an invalid value: err %v, want ErrInvalidEvent", err)
	}
}
