package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"cryptostream/ingest/krakensim"
	"cryptostream/natstest"
	"cryptostream/streams"
)

// TestRunDemo: `run --demo` needs nothing but the binary: krakensim starts
// in process on the embedded recording and candles reach MARKET at once
// (the REST heal backfills the last 12 hours, then live ones follow).
func TestRunDemo(t *testing.T) {
	ctx := t.Context()
	sys, stop := startTestSystemArgs(t, "--bcrypt-cost", "10", "--data-dir", t.TempDir(), "--demo", "--demo-speed", "120")
	market, err := sys.bus.JS.Stream(ctx, streams.StreamMarket)
	if err != nil {
		t.Fatal(err)
	}
	// The backfill comes first, then live minutes: wait while the newest
	// stored minute moves on (not while MARKET merely grows: a heal after
	// every reconnect grows it without a live minute ever coming).
	var newest time.Time
	natstest.WaitProgress(t, 2*time.Minute, "live demo candles in MARKET", func() (bool, string) {
		m, err := market.GetLastMsgForSubject(ctx, streams.CandleSubject(streams.Interval1m, "BTC/USD"))
		if err != nil {
			return false, "no BTC/USD minute"
		}
		c, err := streams.Decode[streams.Candle](m.Data)
		if err != nil {
			t.Fatalf("stored BTC/USD minute seq %d: %v", m.Sequence, err)
		}
		if c.Start.After(newest) {
			newest = c.Start
		}
		return c.Quality == streams.QualityLive, "newest " + newest.Format(time.DateTime)
	})
	resp, err := http.Get("http://" + sys.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `cryptostream_ingest_candles_published_total{interval="1m",quality="backfilled"}`) {
		t.Errorf("/metrics lacks the ingest counters")
	}
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestIngestFlags(t *testing.T) {
	for _, args := range [][]string{{"--assets", "BTCUSD"}, {"--intervals", "2m"}, {"--intervals", ""}, {"--demo-speed", "0"}} {
		if _, err := parseRunConfig(args, testEnv(nil)); err == nil {
			t.Errorf("parseRunConfig(%q) accepted", args)
		}
	}
	cfg, err := parseRunConfig([]string{"--assets", "xbt/usd, eth-usd", "--intervals", "1m,5"}, testEnv(map[string]string{"KRAKEN_WS_URL": "ws://x"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Ingest.symbols; len(got) != 2 || got[0] != "BTC/USD" || got[1] != "ETH/USD" {
		t.Errorf("symbols %v", got)
	}
	if got := cfg.Ingest.intervals; len(got) != 2 || got[1] != streams.Interval5m || cfg.Ingest.WSURL != "ws://x" {
		t.Errorf("intervals %v ws %s", got, cfg.Ingest.WSURL)
	}
}

// TestImportFromKrakenREST imports REST's last 720 rows from krakensim:
// 719 committed candles; the open last row is left out. A second import
// stores nothing.
func TestImportFromKrakenREST(t *testing.T) {
	feed, err := krakensim.DemoFeed()
	if err != nil {
		t.Fatal(err)
	}
	sim, err := krakensim.New(krakensim.Config{Feeds: []krakensim.Feed{feed}, Speed: 1})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(sim)
	defer hs.Close()
	dir := t.TempDir()
	for i, want := range []string{"719 candles published", "0 candles published"} {
		e := testEnv(nil)
		args := []string{"--data-dir", dir, "--log-level", "error", "--from-kraken-rest", "XBTUSD", "--kraken-rest-url", hs.URL}
		if err := cmdImport(t.Context(), args, e); err != nil {
			t.Fatal(err)
		}
		if out := e.stdout.(*bytes.Buffer).String(); !strings.Contains(out, want) {
			t.Errorf("import %d printed %q, want %q", i+1, out, want)
		}
	}
}
