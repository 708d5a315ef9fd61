package gateway_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"cryptostream/streams"
)

// BenchmarkAlertLatency: from a candle stored in MARKET (its PubAck) to the
// alert it fires arriving on the owner's websocket, one candle at a time,
// through the notifier worker and the hub; every candle crosses the rule's
// level, so every one fires. The reference is an alert stored straight
// into ALERTS to the same socket (the hub's share), in the same run.
//
//	CRYPTOSTREAM_SHARED=/work/shared go test -run '^$' -bench AlertLatency -benchtime 500x ./gateway/
func BenchmarkAlertLatency(b *testing.B) {
	s := newStack(b)
	s.track("BTC/USD")
	alice := s.signup("alice", "alice-password")
	aliceID := s.accountID("alice")
	rule := map[string]any{"kind": "price_cross", "symbol": "BTC/USD", "threshold": 100}
	s.expect(s.call("POST", "/alerts/rules", alice, rule), http.StatusCreated)
	s.notifierOn(b)
	c, _, err := s.dialWS(alice, false)
	if err != nil {
		b.Fatal(err)
	}
	c.send(map[string]string{"op": "subscribe", "channel": "alerts"})
	c.expect("subscribed", "alerts")
	start := time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)
	minute := 0
	candle := func() *streams.Candle {
		p := 99.0 + 2*float64(minute%2)
		c := &streams.Candle{Symbol: "BTC/USD", Interval: streams.Interval1m, Start: start.Add(time.Duration(minute) * time.Minute),
			Open: p, High: p, Low: p, Close: p, Quality: streams.QualityLive}
		minute++
		return c
	}
	// Warm: the first close arms the rule, the second fires it.
	publish(b, s, candle())
	publish(b, s, candle())
	c.expect("event", "alerts")
	// The clock starts when the publish of the candle is sent, so the
	// store round trip is inside: on loopback the alert often arrives
	// before the publisher has read its PubAck.
	measure := func(b *testing.B, send func(i int)) {
		lat := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			send(i)
			f := c.expect("event", "alerts")
			lat = append(lat, time.Since(t0))
			var a streams.Alert
			if err := json.Unmarshal(f.Data, &a); err != nil || a.Owner != aliceID {
				b.Fatalf("frame %s: %v", f.Data, err)
			}
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	}
	b.Run("candle-to-websocket", func(b *testing.B) {
		measure(b, func(int) { publish(b, s, candle()) })
	})
	ref := 0
	b.Run("reference-alert-to-websocket", func(b *testing.B) {
		measure(b, func(int) {
			ref++
			publish(b, s, &streams.Alert{ID: fmt.Sprint("ref", ref), RuleID: "ref", Owner: aliceID, Symbol: "BTC/USD", Interval: streams.Interval1m,
				Kind: "price_cross", Message: "ref", Value: 1, Threshold: 1, At: start.Add(time.Duration(ref) * time.Minute)})
		})
	})
}
