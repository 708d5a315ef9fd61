package readmodel_test

import (
	"errors"
	"fmt"
	"testing"

	"cryptostream/datatest"
	"cryptostream/natstest"
	"cryptostream/readmodel"
	"cryptostream/readmodel/readmodeltest"
	"cryptostream/streams"
)

func TestJetStreamReaderContract(t *testing.T) {
	readmodeltest.Run(t, func(t *testing.T) readmodeltest.Setup {
		_, js := ensured(t)
		return readmodeltest.Setup{JS: js, Reader: readmodel.NewJetStream(js), Sync: func(*testing.T) {}}
	})
}

// Queries of subjects that hold nothing, which any client can name, leave
// no series behind in the reader; a subject that holds something is
// indexed once, however often it is asked about.
func TestJetStreamReaderIndexesOnlyWhatIsStored(t *testing.T) {
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	if err := streams.Ensure(t.Context(), js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	r := readmodel.NewJetStream(js)
	ctx := t.Context()
	for i := range 50 {
		sym := fmt.Sprintf("X%dZ/USD", i)
		if _, err := r.Candles(ctx, readmodel.CandleQuery{Symbol: sym, Interval: streams.Interval1m}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Predictions(ctx, readmodel.PredictionQuery{Symbol: sym, Interval: streams.Interval5m}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.LatestPrediction(ctx, sym, streams.Interval1m); !errors.Is(err, readmodel.ErrNotFound) {
			t.Fatal(err)
		}
		if _, err := r.Alerts(ctx, readmodel.AlertQuery{Symbol: sym}); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.Series(); n != 0 {
		t.Fatalf("200 queries of empty subjects left %d series", n)
	}
	c := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 3)
	for i := range c {
		if _, err := streams.Publish(ctx, js, &c[i]); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		page, err := r.Candles(ctx, readmodel.CandleQuery{Symbol: "BTC/USD", Interval: streams.Interval1m})
		if err != nil || len(page.Candles) != 3 {
			t.Fatalf("candles: %d, %v", len(page.Candles), err)
		}
	}
	if n := r.Series(); n != 1 {
		t.Fatalf("one stored series asked about three times: %d series", n)
	}
}
