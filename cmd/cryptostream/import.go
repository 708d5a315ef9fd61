package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/schollz/progressbar/v3"

	"cryptostream/bus"
	"cryptostream/ingest"
	"cryptostream/ingest/krakenrest"
	"cryptostream/streams"
)

func cmdImport(ctx context.Context, args []string, e *env) error {
	var (
		cc                       commonConfig
		symbol, ivName, restPair string
		restURL                  string
	)
	fs := newFlagSet("import", "Loads OHLC history into MARKET: Kraken OHLCVT CSV files (no header:\ntimestamp,open,high,low,close,volume,trades) or CSVs with a header\n(timestamp,open,high,low,close,volume[,trades]), or the last 720 candles from Kraken REST.\nIdempotent: importing the same file twice stores each candle once.\n\nUsage: cryptostream import [flags] FILE...", e)
	cc.register(fs, "")
	fs.stringVar(&symbol, "symbol", "IMPORT_SYMBOL", "BTC/USD", "pair the files hold (Kraken XBT/USD is BTC/USD)")
	fs.stringVar(&ivName, "interval", "IMPORT_INTERVAL", "1m", "candle interval of the files")
	fs.stringVar(&restPair, "from-kraken-rest", "", "", "import the last 720 candles of this Kraken pair (e.g. XBTUSD) from REST instead of files")
	fs.stringVar(&restURL, "kraken-rest-url", "KRAKEN_REST_URL", ingest.DefaultRESTURL, "Kraken REST base URL")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(fs.errs) > 0 {
		return fmt.Errorf("environment: %v", fs.errs)
	}
	if err := cc.validate(); err != nil {
		return err
	}
	sym, err := streams.NormalizeSymbol(symbol)
	if err != nil {
		return fmt.Errorf("--symbol: %w", err)
	}
	iv, err := streams.ParseInterval(ivName)
	if err != nil {
		return fmt.Errorf("--interval: %w", err)
	}
	files := fs.Args()
	if (restPair == "") == (len(files) == 0) {
		return fmt.Errorf("give either files or --from-kraken-rest PAIR")
	}
	log := cc.logger(e)
	b, err := bus.Open(ctx, cc.toolBusConfig("cryptostream-import"), log)
	if err != nil {
		return err
	}
	defer b.Close()

	type batch struct {
		name    string
		candles []streams.Candle
	}
	var batches []batch
	bad := 0
	if restPair != "" {
		rc := &krakenrest.Client{BaseURL: restURL}
		pairs, err := rc.AssetPairs(ctx)
		if err != nil {
			return err
		}
		for _, p := range pairs {
			if p.Key == restPair || p.Altname == restPair || p.WSName == restPair || p.Symbol == restPair {
				sym = p.Symbol
			}
		}
		res, err := rc.OHLC(ctx, restPair, iv, time.Time{})
		if err != nil {
			return err
		}
		batches = append(batches, batch{"kraken REST " + restPair, ingest.RESTCandles(sym, iv, res.Committed(), streams.QualityBackfilled)})
	}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		cs := ingest.ReadFile(filepath.Base(name), f, sym, iv, func(err error) {
			bad++
			fmt.Fprintln(e.stderr, "import: skipped bad row:", err)
		})
		f.Close()
		batches = append(batches, batch{name, cs})
	}
	im := &ingest.Importer{Pub: b.JS, Stored: ingest.StoredStarts(b.JS), Log: log}
	for _, bt := range batches {
		if e.isTerminal && len(bt.candles) > 0 {
			// The grid may hold more candles than rows (filled intervals).
			n := int(bt.candles[len(bt.candles)-1].Start.Sub(bt.candles[0].Start)/iv.Duration()) + 1
			bar := progressbar.NewOptions(n, progressbar.OptionSetWriter(e.stderr), progressbar.OptionSetDescription(filepath.Base(bt.name)),
				progressbar.OptionShowCount(), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
			im.Progress = func(done int) { _ = bar.Set(done) }
		} else {
			im.Progress = nil
		}
		st, err := im.Import(ctx, bt.candles)
		if err != nil {
			return fmt.Errorf("import %s: %w", bt.name, err)
		}
		rate := 0.0
		if st.Elapsed > 0 {
			rate = float64(st.Published) / st.Elapsed.Seconds()
		}
		fmt.Fprintf(e.stdout, "%s: %d rows, %d candles published (%d filled), %d already stored, %d duplicates, %.0f candles/s\n",
			bt.name, st.Rows, st.Published, st.Filled, st.Skipped, st.Duplicates, rate)
	}
	if bad > 0 {
		fmt.Fprintf(e.stdout, "%d bad rows skipped (listed above)\n", bad)
	}
	return nil
}
