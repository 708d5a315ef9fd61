// Package datatest owns the tests' access to the recorded market data in
// ../shared/data (beside the repository): locating it and reading its
// Kraken OHLCVT files into candles. Production parsing of history files is
// the importer's (ingest); this reader is deliberately small and strict so a
// test can check the importer against it.
package datatest

import (
	"bufio"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"cryptostream/streams"
)

// The recorded files.
const (
	KrakenBTCUSD1m = "kraken_BTCUSD_1m_2023-03.csv"
	KrakenXBTUSD5m = "kraken_XBTUSD_5m_2023Q1.csv"
)

// Dir returns the shared data directory: $CRYPTOSTREAM_SHARED/data when set,
// otherwise ../shared/data beside the module root. A test that needs the
// data fails when it is missing: the suite must not pass by skipping.
func Dir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("CRYPTOSTREAM_SHARED"); d != "" {
		return filepath.Join(d, "data")
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			data := filepath.Join(dir, "..", "shared", "data")
			if _, err := os.Stat(data); err != nil {
				t.Fatalf("datatest: shared data not found at %s (set CRYPTOSTREAM_SHARED): %v", data, err)
			}
			return data
		}
		if filepath.Dir(dir) == dir {
			t.Fatal("datatest: no go.mod above the working directory")
		}
	}
}

// Path returns the path of one recorded file.
func Path(t testing.TB, name string) string {
	t.Helper()
	return filepath.Join(Dir(t), name)
}

// KrakenCandles reads the first n rows (all when n <= 0) of a Kraken OHLCVT
// file (no header: timestamp,open,high,low,close,volume,trades) as candles of
// symbol and interval, quality imported.
func KrakenCandles(t testing.TB, name, symbol string, iv streams.Interval, n int) []streams.Candle {
	t.Helper()
	f, err := os.Open(Path(t, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []streams.Candle
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan() && (n <= 0 || len(out) < n); line++ {
		fields := strings.Split(sc.Text(), ",")
		if len(fields) != 7 {
			t.Fatalf("datatest: %s:%d: %d fields", name, line, len(fields))
		}
		var v [7]float64
		for i, s := range fields {
			if v[i], err = strconv.ParseFloat(s, 64); err != nil {
				t.Fatalf("datatest: %s:%d: %v", name, line, err)
			}
		}
		out = append(out, streams.Candle{
			Symbol: symbol, Interval: iv, Start: time.Unix(int64(v[0]), 0).UTC(),
			Open: v[1], High: v[2], Low: v[3], Close: v[4], Volume: v[5], Trades: int64(v[6]),
			Quality: streams.QualityImported,
		})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// ReversalPredictions are the predictions of a deliberately poor test model
// over consecutive candles: at each close, the next close is forecast to
// take back the last candle's return (horizon 1, model "reversal", a ±0.5%
// interval). What a model-error or predicted-move alert test needs: real
// prices, and a model known to do worse than no change.
func ReversalPredictions(cs []streams.Candle) []streams.Prediction {
	var out []streams.Prediction
	for i := 1; i < len(cs); i++ {
		c := cs[i]
		lr := -math.Log(c.Close / cs[i-1].Close)
		pc := c.Close * math.Exp(lr)
		out = append(out, streams.Prediction{Schema: streams.Schema{V: streams.SchemaVersion}, Symbol: c.Symbol, Interval: c.Interval,
			Start: c.Start, Target: c.End(), Horizon: 1, ModelID: "reversal", Close: c.Close, LogReturn: lr, PredictedClose: pc,
			Lower: pc * 0.995, Upper: pc * 1.005})
	}
	return out
}

// Failing gives each prediction the horizons 1 and 15 (the reversal's
// forecast, and no-change at 15) with the live score's failing flag raised
// at horizon 15 on the predictions made in [from, to) of each span: what a
// forecast-failing alert test needs, the flag the predictor sets itself
// only after a day of outcomes.
func Failing(ps []streams.Prediction, spans ...[2]time.Time) {
	for i := range ps {
		p := &ps[i]
		f15 := streams.HorizonForecast{Horizon: 15, Target: p.Start.Add(15 * p.Interval.Duration()), Model: streams.ModelNoChange,
			ModelID: streams.ModelNoChange, PredictedClose: p.Close}
		for _, s := range spans {
			if !p.Start.Before(s[0]) && p.Start.Before(s[1]) {
				f15.Failing = true
				f15.FailingReason = "the 80% interval covered 61.3% of the last 7 days' 2000 outcomes, outside 75-85%"
			}
		}
		p.Forecasts = []streams.HorizonForecast{{Horizon: 1, Target: p.Target, Model: "reversal", ModelID: p.ModelID,
			LogReturn: p.LogReturn, PredictedClose: p.PredictedClose}, f15}
	}
}
