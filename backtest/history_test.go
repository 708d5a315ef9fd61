package backtest

import (
	"testing"

	"cryptostream/pipeline"
	"cryptostream/streams"
)

// marketOnly passes MARKET's Next through, so that the features stage in
// a backtest checks a gap in the market with one get rather than a read
// of the window, as the live stage does; other streams prove nothing.
func TestMarketOnlyNext(t *testing.T) {
	h := pipeline.MemoryHistory{
		{Stream: streams.StreamMarket, Subject: "a", Seq: 3},
		{Stream: streams.StreamMarket, Subject: "b", Seq: 5},
		{Stream: streams.StreamFeatures, Subject: "a", Seq: 7},
	}
	var hist pipeline.History = marketOnly{h}
	nf, ok := hist.(pipeline.NextFinder)
	if !ok {
		t.Fatal("marketOnly is not a NextFinder: every gap in a backtest reads a window")
	}
	for _, tt := range []struct {
		stream, subject string
		from, want      uint64
	}{
		{streams.StreamMarket, "a", 1, 3},
		{streams.StreamMarket, "a", 4, 0},
		{streams.StreamMarket, "b", 4, 5},
		{streams.StreamFeatures, "a", 1, 0},
	} {
		got, err := nf.Next(t.Context(), tt.stream, tt.subject, tt.from)
		if err != nil || got != tt.want {
			t.Errorf("Next(%s, %s, %d) = %d, %v; want %d", tt.stream, tt.subject, tt.from, got, err, tt.want)
		}
	}
	if got, err := (marketOnly{}).Next(t.Context(), streams.StreamMarket, "a", 1); err != nil || got != 0 {
		t.Errorf("with no history: %d, %v; want 0", got, err)
	}
}
