package backtest_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"cryptostream/backtest"
	"cryptostream/datatest"
	"cryptostream/pipeline"
	"cryptostream/streams"
)

// browser is headless Chromium; one that cannot start fails the test.
func browser(t *testing.T) context.Context {
	t.Helper()
	// Not t.TempDir: Chromium's helper processes may still write to its
	// profile for a moment after the browser exits, and TempDir's removal
	// fails the test on a directory that is not empty yet.
	dir, err := os.MkdirTemp("", "backtest-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath("/usr/bin/chromium"),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.UserDataDir(dir),
	)
	// The allocator outlives t.Context, so that its cancel, run last in
	// the cleanups, is what stops the browser and waits for it.
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(func() {
		cancel()
		for range 50 {
			if os.RemoveAll(dir) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("chromium profile %s left behind", dir)
	})
	bctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	if err := chromedp.Run(bctx); err != nil {
		t.Fatalf("chromium (/usr/bin/chromium) does not start: %v", err)
	}
	return bctx
}

// pageVisit is what one page did in the browser once loaded: its console
// errors and exceptions, every request it made beyond its own file, and
// what its charts hold.
type pageVisit struct {
	Errors   []string
	Requests []string
	SVGs     int
	Lines    int // polylines with points
	Bars     int
	Title    string
}

func visit(t *testing.T, bctx context.Context, page []byte) pageVisit {
	t.Helper()
	path := filepath.Join(t.TempDir(), "report.html")
	if err := os.WriteFile(path, page, 0o644); err != nil {
		t.Fatal(err)
	}
	url := "file://" + path
	ctx, cancel := chromedp.NewContext(bctx)
	defer cancel()
	var (
		mu sync.Mutex
		v  pageVisit
	)
	chromedp.ListenTarget(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			v.Errors = append(v.Errors, "exception: "+ev.ExceptionDetails.Text)
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.APITypeError {
				v.Errors = append(v.Errors, "console.error")
			}
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.LevelError {
				v.Errors = append(v.Errors, fmt.Sprintf("log %s: %s %s", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL))
			}
		case *network.EventRequestWillBeSent:
			if u := ev.Request.URL; u != url && !strings.HasPrefix(u, "data:") {
				v.Requests = append(v.Requests, u)
			}
		}
	})
	var lines, bars, svgs int
	var title string
	// Navigate returns once the load event fired: every subresource the
	// page asked for has been requested by then.
	err := chromedp.Run(ctx, runtime.Enable(), cdplog.Enable(), network.Enable(),
		chromedp.Navigate(url),
		chromedp.Evaluate(`document.querySelectorAll("svg").length`, &svgs),
		chromedp.Evaluate(`[...document.querySelectorAll("svg polyline")].filter(p => p.points.numberOfItems > 1).length`, &lines),
		chromedp.Evaluate(`document.querySelectorAll("svg rect.bar").length`, &bars),
		chromedp.Title(&title),
	)
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	mu.Lock()
	defer mu.Unlock()
	v.SVGs, v.Lines, v.Bars, v.Title = svgs, lines, bars, title
	return v
}

// TestHTMLReportInBrowser: the report page of a real run opens in
// headless Chromium with no console error and no request, and draws its
// three charts; the same page with one outside reference is caught, so
// the check itself can fail.
func TestHTMLReportInBrowser(t *testing.T) {
	cs := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, symbol, streams.Interval1m, 1500)
	run, err := backtest.Replay(t.Context(), config(cs), pipeline.Msgs(msgs(t, cs)), nil)
	if err != nil {
		t.Fatal(err)
	}
	page, err := backtest.HTML(run, run.Report(backtest.Strategy{Fees: 0.001, Slippage: 0.0005}))
	if err != nil {
		t.Fatal(err)
	}
	bctx := browser(t)
	t.Run("self-contained", func(t *testing.T) {
		v := visit(t, bctx, page)
		if len(v.Errors) > 0 || len(v.Requests) > 0 {
			t.Fatalf("console errors %q, requests %q", v.Errors, v.Requests)
		}
		// equity (strategy, hold), price (close, predictions), errors.
		if v.SVGs != 3 || v.Lines != 4 || v.Bars == 0 {
			t.Fatalf("%d charts, %d drawn lines, %d histogram bars; want 3, 4, some", v.SVGs, v.Lines, v.Bars)
		}
		if !strings.Contains(v.Title, "BTC/USD") {
			t.Fatalf("title %q", v.Title)
		}
	})
	t.Run("an outside reference is caught", func(t *testing.T) {
		bad := bytes.Replace(page, []byte("</body>"), []byte(`<img src="http://127.0.0.1:1/pixel.png"></body>`), 1)
		v := visit(t, bctx, bad)
		if len(v.Requests) == 0 || len(v.Errors) == 0 {
			t.Fatalf("an image from 127.0.0.1:1 gave requests %q and errors %q", v.Requests, v.Errors)
		}
	})
}
