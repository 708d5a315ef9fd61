package backtest_test

import (
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cryptostream/backtest"
	"cryptostream/pipeline"
	"cryptostream/streams"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current code")

// TestBinanceGolden pins every prediction and the report of a backtest of
// the first 30,000 minutes of the Binance file (past the 60-minute
// calibration's 8-day window, so its removals are exercised): a speed-up of
// the stages must leave them byte for byte as they were. The golden holds
// a SHA-256 of each prediction's JSON, in order, and of the report's, with
// the counts beside it so that a difference says where to look (go test
// -run TestBinanceGolden -update rewrites it).
func TestBinanceGolden(t *testing.T) {
	cs := binanceCandles(t)[:30000]
	run, err := backtest.Replay(t.Context(), benchConfig(cs), pipeline.Msgs(msgs(t, cs)), nil)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := json.Marshal(run.Report(backtest.Strategy{Fees: 0.001, Slippage: 0.0005}))
	if err != nil {
		t.Fatal(err)
	}
	preds := sha256.New()
	ready := 0
	for _, p := range run.Predictions {
		b, err := streams.Encode(p)
		if err != nil {
			t.Fatal(err)
		}
		preds.Write(b)
		if len(p.Forecasts) > 0 && p.Forecasts[len(p.Forecasts)-1].Ready {
			ready++
		}
	}
	// Both the calibrated intervals and the warm-up were exercised.
	if ready < 10000 || ready == len(run.Predictions) {
		t.Fatalf("%d of %d predictions with intervals at the longest horizon", ready, len(run.Predictions))
	}
	got := fmt.Sprintf("predictions %d sha256 %x\nready_longest %d\nreport sha256 %x\n",
		len(run.Predictions), preds.Sum(nil), ready, sha256.Sum256(rep))
	golden := filepath.Join("testdata", "binance_30k.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("predictions or report differ from %s (rerun with -update if the change is meant):\ngot\n%swant\n%s",
			golden, got, strings.TrimSpace(string(want)))
	}
}
