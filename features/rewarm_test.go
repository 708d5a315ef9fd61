package features

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/pipeline"
	"cryptostream/pipeline/pipelinetest"
	"cryptostream/streams"
)

// After a takeover the runner warms a series at the first input it holds
// and steps the rest in stream order; inputs the previous owner already
// handled (acked) are not among them. When the first held input is one
// delivered again (its ack raced a redelivery) and the next lies past
// inputs that were acked, the window skipped those candles: TestEndToEnd
// once stored a vector over 67 candles where the replay held 78. Each
// vector must be the one an uninterrupted run computes.
func TestStepPastHandledCandlesRewarms(t *testing.T) {
	candles := realCandles(t, 0, 400)
	stored := make([]pipeline.Msg, len(candles))
	for i := range candles {
		data, err := streams.Encode(&candles[i])
		if err != nil {
			t.Fatal(err)
		}
		stored[i] = pipeline.Msg{Stream: streams.StreamMarket, Subject: candles[i].Subject(), Seq: uint64(i + 1), Data: data}
	}
	want := run(t, DefaultSpec(), candles)
	// Held after the takeover: 200 (handled before, delivered again),
	// then 212 on; 201 to 211 were handled and acked.
	held := append([]pipeline.Msg{stored[200]}, stored[212:]...)
	v, err := NewVectors(DefaultSpec(), nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for out, err := range pipeline.Replay(t.Context(), v, pipeline.Msgs(held), pipeline.ReplayConfig{History: pipeline.MemoryHistory(stored)}) {
		if err != nil {
			t.Fatal(err)
		}
		got := out.Event.(*streams.FeatureVector)
		w := want[got.Start]
		if !slices.Equal(got.Values, w.Values) || !maps.Equal(got.Window, w.Window) {
			t.Fatalf("vector at %s (seq %d): window %v values %v, want window %v values %v", got.Start, out.In.Seq, got.Window, got.Values, w.Window, w.Values)
		}
		n++
	}
	if n != len(held) {
		t.Fatalf("%d vectors for %d inputs", n, len(held))
	}
}

// A gap in the market (a minute with no trade) is checked with one Next,
// not a read of the window: the stage read MARKET's tail at every gap,
// which in the throughput benchmark (a gap every 50 candles) was a third
// of the chain's CPU. Without a NextFinder it still reads, and the vectors
// are an uninterrupted run's either way.
func TestMarketGapReadsNoWindow(t *testing.T) {
	var candles []streams.Candle
	for i, c := range realCandles(t, 0, 1500) {
		if i%37 != 36 {
			candles = append(candles, c) // no trade that minute
		}
	}
	stored := make([]pipeline.Msg, len(candles))
	gaps := 0
	for i := range candles {
		data, err := streams.Encode(&candles[i])
		if err != nil {
			t.Fatal(err)
		}
		stored[i] = pipeline.Msg{Stream: streams.StreamMarket, Subject: candles[i].Subject(), Seq: uint64(i + 1), Data: data}
		if i > 200 && candles[i].Start.Sub(candles[i-1].Start) > time.Minute {
			gaps++
		}
	}
	if gaps < 5 {
		t.Fatalf("only %d gaps in the data: the test does not test", gaps)
	}
	want := run(t, DefaultSpec(), candles)
	for _, tt := range []struct {
		name      string
		next      bool
		wantTails func(int) bool
	}{
		{"next", true, func(n int) bool { return n == 1 }},
		{"no next", false, func(n int) bool { return n > gaps }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := &pipelinetest.TailCounter{MemoryHistory: stored}
			var hist pipeline.History = h
			if !tt.next {
				hist = pipelinetest.NoNext{H: h}
			}
			v, err := NewVectors(DefaultSpec(), nil, prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for out, err := range pipeline.Replay(t.Context(), v, pipeline.Msgs(stored[200:]), pipeline.ReplayConfig{History: hist}) {
				if err != nil {
					t.Fatal(err)
				}
				got := out.Event.(*streams.FeatureVector)
				w := want[got.Start]
				if !slices.Equal(got.Values, w.Values) || !maps.Equal(got.Window, w.Window) {
					t.Fatalf("vector at %s: window %v values %v, want window %v values %v", got.Start, got.Window, got.Values, w.Window, w.Values)
				}
				n++
			}
			if n != len(stored)-200 {
				t.Fatalf("%d vectors for %d inputs", n, len(stored)-200)
			}
			if !tt.wantTails(h.Tails) {
				t.Errorf("%d windows read over %d gaps", h.Tails, gaps)
			}
		})
	}
}
