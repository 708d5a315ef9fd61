package features

import (
	"maps"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/pipeline"
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
