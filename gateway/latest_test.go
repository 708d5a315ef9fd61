package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/datatest"
	"cryptostream/gateway"
	"cryptostream/natstest"
	"cryptostream/readmodel"
	"cryptostream/readmodel/readmodeltest"
	"cryptostream/streams"
)

// withLatest puts readmodel.Latest, running until the test ends, in front
// of the stack's reader, as the gateway role does.
func withLatest(t testing.TB, l **readmodel.Latest) option {
	return func(_ *gateway.Config, d *gateway.Deps) {
		*l = readmodel.NewLatest(d.Publisher.(jetstream.JetStream), d.Reader, readmodel.LatestConfig{})
		d.Reader = *l
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = (*l).Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
	}
}

type latestAnswer struct {
	Asset    string `json:"asset"`
	Interval string `json:"interval"`
	Candle   struct {
		Time  time.Time `json:"time"`
		Close float64   `json:"close"`
	} `json:"candle"`
}

// asset_latest from the live cache: a stored candle is served once
// delivered, a revision of it replaces the cached answer (not only the
// cached candle), an unknown series is a 404, and a deleted user's token is
// refused on the very next request.
func TestAssetLatestFromTheLiveCache(t *testing.T) {
	var l *readmodel.Latest
	s := newStack(t, withLatest(t, &l))
	admin := s.login(adminName, adminPass)
	bob := s.signup("bob", "bob-password")
	btc := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 3)
	get := func() (int, latestAnswer) {
		r := s.call("GET", "/crypto/asset_latest/BTC-USD", bob, nil)
		var a latestAnswer
		if r.status == http.StatusOK {
			if err := json.Unmarshal(r.body, &a); err != nil {
				t.Fatal(err)
			}
		}
		return r.status, a
	}
	waitFor := func(want streams.Candle) {
		t.Helper()
		natstest.WaitProgress(t, 30*time.Second, "asset_latest to serve "+want.Start.String(), func() (bool, string) {
			st, a := get()
			seq, _ := l.Delivered()
			done := st == http.StatusOK && a.Candle.Time.Equal(want.Start) && a.Candle.Close == want.Close
			return done, fmt.Sprintf("%d %s %v, delivered %d", st, a.Candle.Time, a.Candle.Close, seq)
		})
	}
	publishCandles(t, s, btc[:2])
	waitFor(btc[1])
	for range 3 { // served again from the encoded answer
		if _, a := get(); a.Asset != "BTC/USD" || a.Interval != "1m" || !a.Candle.Time.Equal(btc[1].Start) {
			t.Fatalf("answer %+v", a)
		}
	}

	rev := btc[1]
	rev.Close = rev.Low
	rev.Quality = streams.QualityBackfilled
	readmodeltest.PublishRevision(t, s.js, rev)
	waitFor(rev)
	publishCandles(t, s, btc[2:])
	waitFor(btc[2])

	if r := s.call("GET", "/crypto/asset_latest/ETH-USD", bob, nil); r.status != http.StatusNotFound {
		t.Fatalf("unknown series: %d %s", r.status, r.body)
	}
	s.expect(s.call("DELETE", "/auth/users/bob", admin, nil), http.StatusNoContent)
	if r := s.call("GET", "/crypto/asset_latest/BTC-USD", bob, nil); r.status != http.StatusUnauthorized || r.errCode(t) != "invalid_token" {
		t.Fatalf("a deleted user's token = %d %s", r.status, r.body)
	}
}
