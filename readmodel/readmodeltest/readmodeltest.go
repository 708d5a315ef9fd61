// Package readmodeltest owns the contract every readmodel.Reader must meet.
// Run it against each implementation: the JetStream reader and the
// PostgreSQL projection must give identical answers for the same streams.
package readmodeltest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/datatest"
	"cryptostream/readmodel"
	"cryptostream/streams"
)

// Setup is one fresh implementation under test.
type Setup struct {
	// JS is the JetStream, topology ensured, whose streams the reader reads
	// (directly, or through a projection).
	JS jetstream.JetStream
	// Reader is the implementation under test.
	Reader readmodel.Reader
	// Sync returns once the reader reflects everything published to JS so
	// far (for a projection: once the sink has caught up). A no-op for a
	// reader of the streams themselves.
	Sync func(t *testing.T)
}

// Run runs the contract. newSetup is called once per subtest and must give
// empty streams and an empty reader.
func Run(t *testing.T, newSetup func(t *testing.T) Setup) {
	runChampion(t, newSetup)
	runAlerts(t, newSetup)
	runPredictions(t, newSetup)
	t.Run("empty", func(t *testing.T) {
		s := newSetup(t)
		s.Sync(t)
		if _, err := s.Reader.LatestCandle(t.Context(), "BTC/USD", streams.Interval1m); !errors.Is(err, readmodel.ErrNotFound) {
			t.Fatalf("LatestCandle on nothing = %v, want ErrNotFound", err)
		}
		if _, err := s.Reader.LatestPrediction(t.Context(), "BTC/USD", streams.Interval1m); !errors.Is(err, readmodel.ErrNotFound) {
			t.Fatalf("LatestPrediction on nothing = %v, want ErrNotFound", err)
		}
		page, err := s.Reader.Candles(t.Context(), readmodel.CandleQuery{Symbol: "BTC/USD", Interval: streams.Interval1m})
		if err != nil || len(page.Candles) != 0 || page.Next != "" {
			t.Fatalf("Candles on nothing = %+v, %v", page, err)
		}
	})

	t.Run("pages of real candles", func(t *testing.T) {
		s := newSetup(t)
		btc := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 1234)
		publish(t, s.JS, btc...)
		// Other series must not leak into the answer.
		publish(t, s.JS, relabel(btc[:40], "ETH/USD", streams.Interval1m)...)
		publish(t, s.JS, fiveMinute(btc[:50])...)
		s.Sync(t)

		var got []streams.Candle
		q := readmodel.CandleQuery{Symbol: "BTC/USD", Interval: streams.Interval1m}
		var pages []int
		for {
			page, err := s.Reader.Candles(t.Context(), q)
			if err != nil {
				t.Fatal(err)
			}
			pages = append(pages, len(page.Candles))
			got = append(got, page.Candles...)
			if page.Next == "" {
				break
			}
			if len(got) < len(btc) && page.Next != readmodel.FormatCursor(btc[len(got)].Start) {
				t.Fatalf("cursor %q, want the next candle's unix time %s", page.Next, readmodel.FormatCursor(btc[len(got)].Start))
			}
			q.After = page.Next
		}
		if !reflect.DeepEqual(pages, []int{500, 500, 234}) {
			t.Fatalf("page sizes %v, want [500 500 234]", pages)
		}
		assertCandles(t, got, btc)
	})

	t.Run("range bounds and limit", func(t *testing.T) {
		s := newSetup(t)
		btc := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 1500)
		publish(t, s.JS, btc...)
		s.Sync(t)
		from, to := btc[100].Start, btc[200].Start
		page, err := s.Reader.Candles(t.Context(), readmodel.CandleQuery{Symbol: "BTC/USD", Interval: streams.Interval1m, From: from, To: to, Limit: 60})
		if err != nil {
			t.Fatal(err)
		}
		assertCandles(t, page.Candles, btc[100:160])
		if page.Next != readmodel.FormatCursor(btc[160].Start) {
			t.Fatalf("Next = %q", page.Next)
		}
		page, err = s.Reader.Candles(t.Context(), readmodel.CandleQuery{Symbol: "BTC/USD", Interval: streams.Interval1m, From: from, To: to, Limit: 60, After: page.Next})
		if err != nil {
			t.Fatal(err)
		}
		assertCandles(t, page.Candles, btc[160:200]) // To is exclusive
		if page.Next != "" {
			t.Fatalf("last page has Next %q", page.Next)
		}
		page, err = s.Reader.Candles(t.Context(), readmodel.CandleQuery{Symbol: "BTC/USD", Interval: streams.Interval1m, Limit: 100000})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Candles) != readmodel.MaxLimit {
			t.Fatalf("a huge limit gave %d candles, want the cap %d", len(page.Candles), readmodel.MaxLimit)
		}
		// A From between candles starts at the next one.
		page, err = s.Reader.Candles(t.Context(), readmodel.CandleQuery{Symbol: "BTC/USD", Interval: streams.Interval1m, From: btc[10].Start.Add(time.Second), Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		assertCandles(t, page.Candles, btc[11:12])
		if _, err := s.Reader.Candles(t.Context(), readmodel.CandleQuery{Symbol: "BTC/USD", Interval: streams.Interval1m, From: to, To: from}); !errors.Is(err, readmodel.ErrBadQuery) {
			t.Fatalf("To before From = %v, want ErrBadQuery", err)
		}
		if _, err := s.Reader.Candles(t.Context(), readmodel.CandleQuery{Symbol: "BTC/USD", Interval: streams.Interval1m, After: "yesterday"}); !errors.Is(err, readmodel.ErrBadQuery) {
			t.Fatalf("a bad cursor = %v, want ErrBadQuery", err)
		}
	})

	t.Run("out of order and revised", func(t *testing.T) {
		s := newSetup(t)
		btc := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 300)
		shuffled := append([]streams.Candle(nil), btc...)
		rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		publish(t, s.JS, shuffled...)
		s.Sync(t)
		page, err := s.Reader.Candles(t.Context(), readmodel.CandleQuery{Symbol: "BTC/USD", Interval: streams.Interval1m})
		if err != nil {
			t.Fatal(err)
		}
		assertCandles(t, page.Candles, btc)

		// A revision of a stored bar that arrives after the dedup window
		// (simulated with a fresh message id) replaces it: newest wins.
		revised := btc[7]
		revised.Close = revised.Low
		revised.Quality = streams.QualityBackfilled
		PublishRevision(t, s.JS, revised)
		s.Sync(t)
		page, err = s.Reader.Candles(t.Context(), readmodel.CandleQuery{Symbol: "BTC/USD", Interval: streams.Interval1m, From: revised.Start, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		assertCandles(t, page.Candles, []streams.Candle{revised})
		latest, err := s.Reader.LatestCandle(t.Context(), "BTC/USD", streams.Interval1m)
		if err != nil {
			t.Fatal(err)
		}
		// The newest bar by time, though it was not the last published.
		assertCandles(t, []streams.Candle{latest}, btc[len(btc)-1:])
	})

	t.Run("latest", func(t *testing.T) {
		s := newSetup(t)
		btc := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 20)
		publish(t, s.JS, btc...)
		var preds []streams.Prediction
		for i, c := range btc[:len(btc)-1] {
			preds = append(preds, streams.Prediction{
				Symbol: c.Symbol, Interval: c.Interval, Start: c.Start, Target: btc[i+1].Start, Horizon: 1,
				ModelID: "m-1", Close: c.Close, LogReturn: 0.0001, PredictedClose: c.Close * 1.0001,
				Lower: c.Close * 0.999, Upper: c.Close * 1.001, CandleSeq: uint64(i + 1),
				Window: map[streams.Quality]int{streams.QualityImported: 10},
			})
		}
		// The newest carries every horizon's forecast: both readers give
		// them back as published.
		last := &preds[len(preds)-1]
		cov := 0.8125
		last.Model, last.Sigma = streams.ModelLinear, 0.0007
		last.Forecasts = []streams.HorizonForecast{
			{Horizon: 1, Target: last.Target, Model: streams.ModelLinear, ModelID: "m-1", LogReturn: last.LogReturn,
				PredictedClose: last.PredictedClose, Sigma: 0.0007, VolatilityModel: "combined", Ready: true,
				Intervals: []streams.ForecastInterval{{Level: 0.8, Lower: last.Close * 0.9992, Upper: last.Close * 1.001, Coverage: &cov, Covered: 1440}}},
			{Horizon: 15, Target: last.Start.Add(15 * time.Minute), Model: streams.ModelNoChange, ModelID: streams.ModelNoChange,
				PredictedClose: last.Close},
		}
		for i := range preds {
			if _, err := streams.Publish(t.Context(), s.JS, &preds[i]); err != nil {
				t.Fatal(err)
			}
		}
		s.Sync(t)
		c, err := s.Reader.LatestCandle(t.Context(), "BTC/USD", streams.Interval1m)
		if err != nil {
			t.Fatal(err)
		}
		assertCandles(t, []streams.Candle{c}, btc[len(btc)-1:])
		p, err := s.Reader.LatestPrediction(t.Context(), "BTC/USD", streams.Interval1m)
		if err != nil {
			t.Fatal(err)
		}
		want := preds[len(preds)-1]
		want.Trace, p.Trace = nil, nil
		if !reflect.DeepEqual(p, want) {
			t.Fatalf("LatestPrediction = %+v\nwant %+v", p, want)
		}
		if _, err := s.Reader.LatestCandle(t.Context(), "ETH/USD", streams.Interval1m); !errors.Is(err, readmodel.ErrNotFound) {
			t.Fatalf("LatestCandle of an unknown asset = %v, want ErrNotFound", err)
		}
		if _, err := s.Reader.LatestCandle(t.Context(), "BTC/USD", streams.Interval5m); !errors.Is(err, readmodel.ErrNotFound) {
			t.Fatalf("LatestCandle of an empty interval = %v, want ErrNotFound", err)
		}
	})
}

// runChampion is the model-evaluation part of the contract: the champion the
// trainer registered, read back whole, and a champion change followed.
func runChampion(t *testing.T, newSetup func(t *testing.T) Setup) {
	t.Run("champion", func(t *testing.T) {
		s := newSetup(t)
		kv, err := s.JS.KeyValue(t.Context(), streams.BucketModelRegistry)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Reader.Champion(t.Context(), "BTC/USD", streams.Interval1m); !errors.Is(err, readmodel.ErrNotFound) {
			t.Fatalf("Champion with no model = %v, want ErrNotFound", err)
		}
		at := time.Date(2023, 3, 5, 12, 0, 0, 0, time.UTC)
		model := func(id string, mse float64) streams.ModelRecord {
			return streams.ModelRecord{
				Schema: streams.Schema{V: streams.SchemaVersion},
				ID:     id, Symbol: "BTC/USD", Interval: streams.Interval1m, Horizon: 1,
				Features: []string{"ret_1", "rsi_14"}, Coefficients: []float64{1e-5, 0.02, -3e-4},
				ResidualStd: 9.3e-4, TrainFrom: at, TrainTo: at.Add(48 * time.Hour),
				TestFrom: at.Add(48*time.Hour + 5*time.Minute), TestTo: at.Add(60 * time.Hour),
				Metrics: map[string]streams.Metrics{
					"train":         {N: 2880, MSE: mse * 0.98, R2: 0.0127, MAE: 5.1e-4, DirectionAccuracy: 0.51},
					"test":          {N: 720, MSE: mse, R2: -0.00913, MAE: 5.381e-4, DirectionAccuracy: 0.4986},
					"baseline_zero": {N: 720, MSE: 8.5594e-07, R2: -0.00009, MAE: 5.282e-4},
				},
				Champion: true, Decision: "promoted: beats the zero forecast", Artifact: "models/" + id, CreatedAt: at.Add(61 * time.Hour),
			}
		}
		put := func(key string, v any) {
			t.Helper()
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Put(t.Context(), key, b); err != nil {
				t.Fatal(err)
			}
		}
		first, second := model("m-1", 8.4e-07), model("m-2", 8.1e-07)
		put(streams.ModelKey(first.ID), first)
		put(streams.ModelKey(second.ID), second)
		if _, err := kv.Put(t.Context(), streams.ChampionKey(streams.Interval1m, "BTC/USD"), []byte(first.ID)); err != nil {
			t.Fatal(err)
		}
		s.Sync(t)
		got, err := s.Reader.Champion(t.Context(), "BTC/USD", streams.Interval1m)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, first) {
			t.Fatalf("Champion = %+v\nwant %+v", got, first)
		}
		if _, err := kv.Put(t.Context(), streams.ChampionKey(streams.Interval1m, "BTC/USD"), []byte(second.ID)); err != nil {
			t.Fatal(err)
		}
		s.Sync(t)
		if got, err := s.Reader.Champion(t.Context(), "BTC/USD", streams.Interval1m); err != nil || got.ID != second.ID {
			t.Fatalf("after a champion change: %+v, %v; want %s", got.ID, err, second.ID)
		}
		if _, err := s.Reader.Champion(t.Context(), "ETH/USD", streams.Interval1m); !errors.Is(err, readmodel.ErrNotFound) {
			t.Fatalf("Champion of a series without one = %v, want ErrNotFound", err)
		}
	})
}

// runAlerts is the alert-history part of the contract: order by time then
// id, two rules firing at the same minute both kept, bounds and limit.
func runAlerts(t *testing.T, newSetup func(t *testing.T) Setup) {
	t.Run("alerts", func(t *testing.T) {
		s := newSetup(t)
		base := time.Date(2023, 3, 5, 12, 0, 0, 0, time.UTC)
		var want []streams.Alert
		for i := range 6 {
			for _, rule := range []string{"move-1pct", "above-25k"} {
				want = append(want, streams.Alert{
					ID: fmt.Sprintf("%s-%d", rule, i), RuleID: rule, Symbol: "BTC/USD", Interval: streams.Interval1m,
					Kind: "price_move", Message: "BTC/USD moved", Value: 25000 + float64(i), Threshold: 0.01,
					At: base.Add(time.Duration(i) * time.Minute),
				})
			}
		}
		// Published newest first, to show the answer is ordered, not stored order.
		for i := len(want) - 1; i >= 0; i-- {
			if _, err := streams.Publish(t.Context(), s.JS, &want[i]); err != nil {
				t.Fatal(err)
			}
		}
		other := want[0]
		other.Symbol, other.ID = "ETH/USD", "eth-0"
		if _, err := streams.Publish(t.Context(), s.JS, &other); err != nil {
			t.Fatal(err)
		}
		s.Sync(t)
		slices.SortFunc(want, func(a, b streams.Alert) int {
			if c := a.At.Compare(b.At); c != 0 {
				return c
			}
			return strings.Compare(a.ID, b.ID)
		})
		check := func(q readmodel.AlertQuery, want []streams.Alert) {
			t.Helper()
			got, err := s.Reader.Alerts(t.Context(), q)
			if err != nil {
				t.Fatal(err)
			}
			for i := range got {
				got[i].Schema, got[i].Trace = streams.Schema{}, nil
			}
			want = slices.Clone(want)
			for i := range want {
				want[i].Schema, want[i].Trace = streams.Schema{}, nil
			}
			if len(got) != len(want) || (len(want) > 0 && !reflect.DeepEqual(got, want)) {
				t.Fatalf("Alerts(%+v) = %+v\nwant %+v", q, got, want)
			}
		}
		check(readmodel.AlertQuery{Symbol: "BTC/USD"}, want)
		check(readmodel.AlertQuery{Symbol: "BTC/USD", From: base.Add(2 * time.Minute), To: base.Add(4 * time.Minute)}, want[4:8])
		check(readmodel.AlertQuery{Symbol: "BTC/USD", Limit: 3}, want[:3])
		check(readmodel.AlertQuery{Symbol: "DOGE/USD"}, nil)
		if _, err := s.Reader.Alerts(t.Context(), readmodel.AlertQuery{Symbol: "btc"}); !errors.Is(err, readmodel.ErrBadQuery) {
			t.Fatalf("Alerts of a malformed symbol = %v, want ErrBadQuery", err)
		}
	})
}

// runPredictions is the prediction-history part of the contract: pages in
// candle order whatever the stored order, bounds, limit and cursor like
// candles, other series kept out, a revision replacing what it revises.
func runPredictions(t *testing.T, newSetup func(t *testing.T) Setup) {
	t.Run("prediction history", func(t *testing.T) {
		s := newSetup(t)
		btc := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 130)
		var want []streams.Prediction
		for i, c := range btc[:len(btc)-1] {
			cov := 0.75 + float64(i)/1000
			want = append(want, streams.Prediction{
				Schema: streams.Schema{V: streams.SchemaVersion},
				Symbol: c.Symbol, Interval: c.Interval, Start: c.Start, Target: btc[i+1].Start, Horizon: 1,
				ModelID: streams.ModelNoChange, Close: c.Close, PredictedClose: c.Close,
				Lower: c.Close * 0.999, Upper: c.Close * 1.001, CandleSeq: uint64(i + 1), Model: streams.ModelNoChange, Sigma: 0.0005,
				Forecasts: []streams.HorizonForecast{{Horizon: 1, Target: btc[i+1].Start, Model: streams.ModelNoChange, ModelID: streams.ModelNoChange,
					PredictedClose: c.Close, Sigma: 0.0005, Ready: true,
					Intervals: []streams.ForecastInterval{{Level: 0.8, Lower: c.Close * 0.999, Upper: c.Close * 1.001, Coverage: &cov, Covered: i}}}},
			})
		}
		// Stored out of order, with other series beside them and a first
		// version of one prediction that a later one replaces.
		stored := slices.Clone(want)
		rand.New(rand.NewPCG(3, 4)).Shuffle(len(stored), func(i, j int) { stored[i], stored[j] = stored[j], stored[i] })
		first := want[40]
		first.PredictedClose, first.ModelID = first.Close*1.0005, "m-old"
		eth, fiveMin := want[0], want[5]
		eth.Symbol = "ETH/USD"
		fiveMin.Interval = streams.Interval5m
		for _, p := range append([]streams.Prediction{first, eth, fiveMin}, stored...) {
			m, err := streams.NewMsg(&p)
			if err != nil {
				t.Fatal(err)
			}
			// A fresh message id, as a revision published after the dedup
			// window has.
			m.Header.Set(nats.MsgIdHdr, m.Header.Get(nats.MsgIdHdr)+fmt.Sprintf(":%d:%s", p.CandleSeq, p.ModelID))
			if _, err := s.JS.PublishMsg(t.Context(), m); err != nil {
				t.Fatal(err)
			}
		}
		s.Sync(t)
		check := func(q readmodel.PredictionQuery, want []streams.Prediction, next string) {
			t.Helper()
			page, err := s.Reader.Predictions(t.Context(), q)
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Predictions) != len(want) {
				t.Fatalf("Predictions(%+v): %d, want %d", q, len(page.Predictions), len(want))
			}
			for i := range want {
				if !reflect.DeepEqual(page.Predictions[i], want[i]) {
					t.Fatalf("Predictions(%+v)[%d] = %+v\nwant %+v", q, i, page.Predictions[i], want[i])
				}
			}
			if page.Next != next {
				t.Fatalf("Predictions(%+v).Next = %q, want %q", q, page.Next, next)
			}
		}
		check(readmodel.PredictionQuery{Symbol: "BTC/USD", Interval: streams.Interval1m}, want, "")
		from, to := want[10].Start, want[100].Start
		check(readmodel.PredictionQuery{Symbol: "BTC/USD", Interval: streams.Interval1m, From: from, To: to, Limit: 50}, want[10:60], readmodel.FormatCursor(want[60].Start))
		check(readmodel.PredictionQuery{Symbol: "BTC/USD", Interval: streams.Interval1m, From: from, To: to, Limit: 50, After: readmodel.FormatCursor(want[60].Start)}, want[60:100], "")
		check(readmodel.PredictionQuery{Symbol: "BTC/USD", Interval: streams.Interval1m, From: want[3].Start.Add(time.Second), Limit: 1}, want[4:5], readmodel.FormatCursor(want[5].Start))
		check(readmodel.PredictionQuery{Symbol: "DOGE/USD", Interval: streams.Interval1m}, nil, "")
		check(readmodel.PredictionQuery{Symbol: "BTC/USD", Interval: streams.Interval15m}, nil, "")
		page, err := s.Reader.Predictions(t.Context(), readmodel.PredictionQuery{Symbol: "BTC/USD", Interval: streams.Interval1m, Limit: 100000})
		if err != nil || len(page.Predictions) != len(want) {
			t.Fatalf("a huge limit: %d, %v", len(page.Predictions), err)
		}
		if _, err := s.Reader.Predictions(t.Context(), readmodel.PredictionQuery{Symbol: "BTC/USD", Interval: streams.Interval1m, From: to, To: from}); !errors.Is(err, readmodel.ErrBadQuery) {
			t.Fatalf("To before From = %v, want ErrBadQuery", err)
		}
		if _, err := s.Reader.Predictions(t.Context(), readmodel.PredictionQuery{Symbol: "btc", Interval: streams.Interval1m}); !errors.Is(err, readmodel.ErrBadQuery) {
			t.Fatalf("a malformed symbol = %v, want ErrBadQuery", err)
		}
	})
}

// publish stores candles with bounded asynchronous publishing.
// PublishRevision stores c under a fresh message id, as a revision of a
// stored candle that arrives after the dedup window does.
func PublishRevision(t testing.TB, js jetstream.JetStream, c streams.Candle) {
	t.Helper()
	msg, err := streams.NewMsg(&c)
	if err != nil {
		t.Fatal(err)
	}
	msg.Header.Set(jetstream.MsgIDHeader, c.MsgID()+":revised")
	if _, err := js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
}

func publish(t *testing.T, js jetstream.JetStream, candles ...streams.Candle) {
	t.Helper()
	msgs := make([]*nats.Msg, len(candles))
	for i := range candles {
		m, err := streams.NewMsg(&candles[i])
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = m
	}
	for _, m := range msgs {
		if _, err := js.PublishMsgAsync(m); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("publish did not complete")
	}
}

func relabel(cs []streams.Candle, symbol string, iv streams.Interval) []streams.Candle {
	out := append([]streams.Candle(nil), cs...)
	for i := range out {
		out[i].Symbol, out[i].Interval = symbol, iv
	}
	return out
}

// fiveMinute keeps the candles that sit on the 5m grid, relabelled as 5m.
func fiveMinute(cs []streams.Candle) []streams.Candle {
	var out []streams.Candle
	for _, c := range cs {
		if streams.Interval5m.Floor(c.Start).Equal(c.Start) {
			c.Interval = streams.Interval5m
			out = append(out, c)
		}
	}
	return out
}

// assertCandles compares what a reader answers, which excludes the trace.
func assertCandles(t *testing.T, got, want []streams.Candle) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d candles, want %d", len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		w.Trace, g.Trace = nil, nil
		w.Schema, g.Schema = streams.Schema{}, streams.Schema{}
		if !g.Start.Equal(w.Start) {
			t.Fatalf("candle %d starts %s, want %s", i, g.Start, w.Start)
		}
		g.Start, w.Start = w.Start.UTC(), w.Start.UTC()
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("candle %d = %+v\nwant %+v", i, g, w)
		}
	}
}
