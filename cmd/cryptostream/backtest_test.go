package main

import (
	"bytes"
	"errors"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cryptostream/backtest"
	"cryptostream/bus"
	"cryptostream/datatest"
	"cryptostream/registry"
	"cryptostream/streams"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current code")

// importRecorded stores the first n minutes of the recorded Kraken file in
// an embedded MARKET under dataDir, through the import command.
func importRecorded(t *testing.T, dataDir string, n int) {
	t.Helper()
	src, err := os.ReadFile(datatest.Path(t, datatest.KrakenBTCUSD1m))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfterN(string(src), "\n", n+1)
	file := writeCSV(t, t.TempDir(), "btc.csv", strings.Join(lines[:n], ""))
	e := testEnv(nil)
	if err := cmdImport(t.Context(), []string{"--data-dir", dataDir, "--log-level", "error", "--max-fill", "0", file}, e); err != nil {
		t.Fatalf("import: %v\n%s", err, e.stderr.(*bytes.Buffer))
	}
}

// reversal is a hand-made model that bets on a fifth of the last
// minute's move coming back: enough to trade.
var reversal = streams.ModelRecord{ID: "m-reversal", Symbol: "BTC/USD", Interval: streams.Interval1m, Horizon: 1,
	Features: []string{"ret_1"}, Coefficients: []float64{0, -0.2},
	TrainTo: time.Date(2023, 3, 1, 0, 0, 0, 0, time.UTC), Champion: true}

// putModel stores rec in the registry of the system under dataDir.
func putModel(t *testing.T, dataDir string, rec streams.ModelRecord) {
	t.Helper()
	b, err := bus.Open(t.Context(), bus.Config{DataDir: dataDir, Name: "test", Replicas: 1}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	models, err := registry.OpenModels(t.Context(), b.JS)
	if err != nil {
		t.Fatal(err)
	}
	if err := models.Put(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
}

func runBacktest(t *testing.T, args ...string) (string, error) {
	t.Helper()
	e := testEnv(nil)
	err := cmdBacktest(t.Context(), append([]string{"--log-level", "error"}, args...), e)
	if e.stderr.(*bytes.Buffer).Len() > 0 {
		t.Errorf("stderr is not quiet off a terminal:\n%s", e.stderr.(*bytes.Buffer))
	}
	return e.stdout.(*bytes.Buffer).String(), err
}

// TestBacktestCommand: two runs of the same backtest print byte-identical
// JSON, equal to the golden report (go test -run TestBacktestCommand
// -update rewrites it); off a terminal nothing but the report is written.
func TestBacktestCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	importRecorded(t, dir, 6000)
	putModel(t, dir, reversal)
	args := []string{"--data-dir", dir, "--asset", "BTC/USD", "--from", "2023-03-04T00:00:00Z", "--to", "2023-03-05T03:00:00Z",
		"--model", reversal.ID, "--json", "--sweep", "fees=0,0.0002", "threshold=0,0.0001,0.0002"}
	first, err := runBacktest(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	second, err := runBacktest(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	if first != second {
		t.Fatalf("two runs differ:\n%s\n---\n%s", first, second)
	}
	golden := filepath.Join("testdata", "backtest.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(first), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if first != string(want) {
		t.Fatalf("report differs from %s (rerun with -update if the change is meant):\n%s", golden, first)
	}
}

// TestBacktestBadInput: what a user can get wrong is a clear error and a
// non-zero exit, before or after reading MARKET.
func TestBacktestBadInput(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	importRecorded(t, dir, 300)
	base := []string{"--data-dir", dir, "--from", "2023-03-01T05:00:00Z", "--to", "2023-03-01T09:00:00Z"}
	for _, tc := range []struct {
		name string
		args []string
		want error
		text string
	}{
		{"unknown asset", []string{"--asset", "ETH/USD"}, backtest.ErrUnknownAsset, "no 1m candles of ETH/USD"},
		{"empty range", []string{"--from", "2024-01-01", "--to", "2024-01-02"}, backtest.ErrEmptyRange, "no candles in the range"},
		{"from after to", []string{"--from", "2023-03-02", "--to", "2023-03-01"}, backtest.ErrBadRange, "after"},
		{"missing model", []string{"--model", "m-nope"}, backtest.ErrUnknownModel, "m-nope"},
		{"model and training", []string{"--model", "m-1", "--train", "walk-forward", "--retrain-every", "100"}, backtest.ErrSettings, "exclude"},
		{"bad sweep", []string{"--sweep", "leverage=2"}, backtest.ErrSettings, "leverage"},
		{"bad time", []string{"--from", "yesterday"}, nil, "--from \"yesterday\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runBacktest(t, append(append([]string{}, base...), tc.args...)...)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("err %v, want %v naming %q", err, tc.want, tc.text)
			}
		})
	}
}
