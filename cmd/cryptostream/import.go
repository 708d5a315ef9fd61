package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"cryptostream/bus"
	"cryptostream/ingest"
	"cryptostream/ingest/krakenrest"
	"cryptostream/streams"
)

const importSynopsis = `Loads OHLC history into MARKET: Kraken OHLCVT CSV files (no header:
timestamp,open,high,low,close,volume,trades) or CSVs with a header
(timestamp,open,high,low,close,volume[,trades]), or the last 720 candles from Kraken REST.
Idempotent: importing the same file twice stores each candle once; a real row replaces
a filled (flat, invented) candle stored for its interval.

Rows that cannot be read, are invalid or start in the future are refused and listed by
reason and line; the good rows are still imported and the command exits non-zero.
Gaps are filled with flat candles only between two accepted rows with no refused row
between them and at most --max-fill intervals long. A file whose rows are spaced by
another interval than --interval is refused.`

func cmdImport(ctx context.Context, args []string, e *env) error {
	var (
		cc                       commonConfig
		symbol, ivName, restPair string
		restURL                  string
		maxFill                  int
	)
	fs := newFlagSet("import", importSynopsis, e)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: cryptostream import [flags] FILE...\n\n%s\n\nFlags:\n", importSynopsis)
		fs.PrintDefaults()
	}
	cc.register(fs, "", "")
	fs.stringVar(&symbol, "symbol", "IMPORT_SYMBOL", "BTC/USD", "pair the files hold (Kraken XBT/USD is BTC/USD)")
	fs.stringVar(&ivName, "interval", "IMPORT_INTERVAL", "1m", "candle interval of the files")
	fs.stringVar(&restPair, "from-kraken-rest", "", "", "import the last 720 candles of this Kraken pair (e.g. XBTUSD) from REST instead of files")
	fs.stringVar(&restURL, "kraken-rest-url", "KRAKEN_REST_URL", ingest.DefaultRESTURL, "Kraken REST base URL")
	fs.intVar(&maxFill, "max-fill", "IMPORT_MAX_FILL", ingest.DefaultMaxFill, "longest gap, in intervals, filled with flat candles between two rows (0: none)")
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
	if maxFill < 0 {
		return fmt.Errorf("--max-fill %d: must not be negative", maxFill)
	}
	if maxFill == 0 {
		maxFill = -1 // the importer's "none"
	}
	files := fs.Args()
	if (restPair == "") == (len(files) == 0) {
		return fmt.Errorf("give either files or --from-kraken-rest PAIR")
	}

	// Read everything first: a refused file stores nothing.
	type batch struct {
		name   string
		series ingest.Series
	}
	var batches []batch
	var rejected []*ingest.BadRowError
	now := time.Now()
	for _, name := range files {
		s, err := readImportFile(name, sym, iv, now, func(err *ingest.BadRowError) { rejected = append(rejected, err) })
		if err != nil {
			return err
		}
		batches = append(batches, batch{name, s})
	}
	log := cc.logger(e)
	b, err := bus.Open(ctx, cc.toolBusConfig("cryptostream-import"), log)
	if err != nil {
		return err
	}
	defer b.Close()
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
		s, bad := ingest.RESTSeries(sym, iv, res.Committed(), streams.QualityBackfilled, time.Now())
		for _, err := range bad {
			reason := ingest.ReasonRowInvalid
			if errors.Is(err, streams.ErrFutureCandle) {
				reason = ingest.ReasonRowFuture
			}
			rejected = append(rejected, &ingest.BadRowError{File: "kraken REST " + restPair, Reason: reason, Err: err})
		}
		batches = append(batches, batch{"kraken REST " + restPair, s})
	}

	im := &ingest.Importer{Pub: b.JS, Stored: ingest.StoredStarts(b.JS), MaxFill: maxFill, Log: log}
	accepted := 0
	for _, bt := range batches {
		cs := bt.series.Candles
		accepted += len(cs)
		if e.isTerminal && len(cs) > 0 {
			// The grid may hold more candles than rows (filled intervals).
			n := int(cs[len(cs)-1].Start.Sub(cs[0].Start)/iv.Duration()) + 1
			bar := progressbar.NewOptions(n, progressbar.OptionSetWriter(e.stderr), progressbar.OptionSetDescription(filepath.Base(bt.name)),
				progressbar.OptionShowCount(), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
			im.Progress = func(done int) { _ = bar.Set(done) }
		} else {
			im.Progress = nil
		}
		st, err := im.Import(ctx, bt.series)
		if err != nil {
			return fmt.Errorf("import %s: %w (importing it again resumes: what was stored is skipped)", bt.name, err)
		}
		rate := 0.0
		if st.Elapsed > 0 {
			rate = float64(st.Published) / st.Elapsed.Seconds()
		}
		fmt.Fprintf(e.stdout, "%s: %d rows, %d candles published (%d filled, %d replacing filled ones), %d already stored, %d duplicates, %.0f candles/s\n",
			bt.name, st.Rows, st.Published, st.Filled, st.Replaced, st.Skipped, st.Duplicates, rate)
		for _, g := range st.Open {
			fmt.Fprintf(e.stdout, "%s: %d intervals after %s left open: %s\n", bt.name, g.Intervals, g.After.Format(time.RFC3339), g.Reason)
		}
	}
	if len(rejected) > 0 {
		fmt.Fprint(e.stderr, rejectionSummary(rejected))
		return fmt.Errorf("import: %d rows refused (listed above); the other rows were imported", len(rejected))
	}
	if accepted == 0 {
		return errors.New("import: no row to import")
	}
	return nil
}

func readImportFile(name string, sym string, iv streams.Interval, now time.Time, bad func(*ingest.BadRowError)) (ingest.Series, error) {
	f, err := os.Open(name)
	if err != nil {
		return ingest.Series{}, err
	}
	defer f.Close()
	return ingest.ReadFile(filepath.Base(name), io.Reader(f), sym, iv, now, bad)
}

// rejectionSummary lists refused rows by file and reason with their lines
// (the first 20 of each), then every message of the first few.
func rejectionSummary(rejected []*ingest.BadRowError) string {
	type key struct{ file, reason string }
	lines := map[key][]int{}
	var keys []key
	for _, r := range rejected {
		k := key{r.File, r.Reason}
		if _, ok := lines[k]; !ok {
			keys = append(keys, k)
		}
		lines[k] = append(lines[k], r.Line)
	}
	slices.SortFunc(keys, func(a, b key) int { return strings.Compare(a.file+"\x00"+a.reason, b.file+"\x00"+b.reason) })
	var b strings.Builder
	fmt.Fprintf(&b, "import: %d rows refused:\n", len(rejected))
	for _, k := range keys {
		ls := lines[k]
		shown := make([]string, 0, min(len(ls), 20))
		for _, l := range ls[:min(len(ls), 20)] {
			shown = append(shown, strconv.Itoa(l))
		}
		more := ""
		if len(ls) > 20 {
			more = fmt.Sprintf(" and %d more", len(ls)-20)
		}
		fmt.Fprintf(&b, "  %s: %s: %d (lines %s%s)\n", k.file, k.reason, len(ls), strings.Join(shown, ", "), more)
	}
	for _, r := range rejected[:min(len(rejected), 10)] {
		fmt.Fprintf(&b, "  %v\n", r)
	}
	return b.String()
}
