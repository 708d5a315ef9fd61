package pipeline

import (
	"testing"
	"time"

	"cryptostream/streams"
)

// TestFlightReusesLandedOutputs: a flight fills the messages of the batch
// it landed with the next batch's outputs, except when an output went by
// PublishMsgAsync, whose future keeps its message to send again.
func TestFlightReusesLandedOutputs(t *testing.T) {
	at := time.Date(2026, 12, 7, 16, 0, 0, 0, time.UTC)
	candle := func(i int) *streams.Candle {
		return &streams.Candle{Symbol: "BTC/USD", Interval: streams.Interval1m, Start: at.Add(time.Duration(i) * time.Minute),
			Open: 1, High: 2, Low: 1, Close: 2, Volume: 1, Trades: 1, Quality: streams.QualityLive}
	}
	for _, async := range []bool{false, true} {
		var fl flight
		fl.reset(nil)
		first, err := fl.newOut(candle(0))
		if err != nil {
			t.Fatal(err)
		}
		fl.outs = append(fl.outs, first)
		fl.async = async
		fl.reset(nil)
		next, err := fl.newOut(candle(1))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := streams.NewMsg(candle(1))
		if string(next.Data) != string(want.Data) || next.Header.Get("Nats-Msg-Id") != want.Header.Get("Nats-Msg-Id") {
			t.Fatalf("async %v: the next output is %s %q, want %s %q", async, next.Header, next.Data, want.Header, want.Data)
		}
		if reused := next == first; reused == async {
			t.Fatalf("async %v: output message reused %v", async, reused)
		}
	}
}
