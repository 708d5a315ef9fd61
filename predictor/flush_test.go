package predictor

import (
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/streams"
)

// TestFlushCountWithoutStore: with no registry store the live figures stay
// in memory, and the count of unwritten scores restarts at every flush as
// it does after a stored one; it once stayed at FlushEvery, so every later
// score recomputed and "flushed" the figures.
func TestFlushCountWithoutStore(t *testing.T) {
	p := NewPredictions(PredictionsConfig{FlushEvery: 10}, nil, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	v := streams.FeatureVector{Symbol: "BTC/USD", Interval: streams.Interval1m}
	for i := range 35 {
		p.record(t.Context(), p.seriesNames(&v), Score{ModelID: "m", Predicted: 1e-3, Actual: float64(i%3-1) * 1e-3})
		if n := p.unflush["m"]; n >= 10 {
			t.Fatalf("after %d scores, %d unwritten: the count did not restart", i+1, n)
		}
	}
	if n := p.unflush["m"]; n != 5 {
		t.Fatalf("%d unwritten after 35 scores, flushing every 10; want 5", n)
	}
}
