package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"cryptostream/ingest/krakensim"
	"cryptostream/natstest"
	"cryptostream/streams"
)

// runUntil starts run's composition with args and waits until cond holds
// on the newest stored BTC/USD minute, then stops it. cond also reports the
// progress towards what it waits for (how far the series has come, not
// merely that something was stored): a measure that moves without getting
// closer, such as the last stored sequence while the ingester reconnects
// and heals the same hours again, let a stuck test wait until go test's
// own timeout.
func runUntil(t *testing.T, args []string, what string, cond func(streams.Candle) (bool, string)) {
	t.Helper()
	ctx := t.Context()
	sys, stop := startTestSystemArgs(t, args...)
	market, err := sys.bus.JS.Stream(ctx, streams.StreamMarket)
	if err != nil {
		t.Fatal(err)
	}
	// A loaded machine may take minutes to start and replay, which only a
	// stalled series fails.
	natstest.WaitProgress(t, 2*time.Minute, what, func() (bool, string) {
		m, err := market.GetLastMsgForSubject(ctx, streams.CandleSubject(streams.Interval1m, "BTC/USD"))
		if err != nil {
			return false, "no BTC/USD minute stored"
		}
		c, err := streams.Decode[streams.Candle](m.Data)
		if err != nil {
			t.Fatalf("stored BTC/USD minute seq %d: %v", m.Sequence, err)
		}
		return cond(c)
	})
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
}

// TestDemoThenRealRestart (issue 11 item 15): after `run --demo
// --demo-speed 120`, a normal restart on the same data dir ingests again:
// the demo stored no candle from the future to block it. The "real"
// Kraken is krakensim in real time, shifted to the present.
func TestDemoThenRealRestart(t *testing.T) {
	dir := t.TempDir()
	// Twenty live minutes take ten seconds at 120x: a replay that started
	// at the present would be well ahead of the clock by then.
	var firstLive time.Time
	var live time.Duration
	runUntil(t, []string{"--data-dir", dir, "--demo", "--demo-speed", "120"}, "twenty live demo minutes", func(c streams.Candle) (bool, string) {
		if c.Start.After(time.Now().Add(streams.MaxClockSkew)) {
			t.Fatalf("the demo stored a candle from the future: %s", c.Start)
		}
		if c.Quality == streams.QualityLive {
			if firstLive.IsZero() {
				firstLive = c.Start
			}
			live = max(live, c.Start.Sub(firstLive))
		}
		// Only live minutes count: a heal after a reconnect stores
		// backfilled ones, which bring the goal no closer.
		return live >= 20*time.Minute, fmt.Sprintf("%s of live minutes", live)
	})

	feed, err := krakensim.DemoFeed()
	if err != nil {
		t.Fatal(err)
	}
	sim, err := krakensim.New(krakensim.Config{Feeds: []krakensim.Feed{feed}, Speed: 1, Shift: true})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(sim)
	simCtx, stopSim := context.WithCancel(context.Background())
	simDone := make(chan struct{})
	go func() { sim.Run(simCtx); close(simDone) }()
	t.Cleanup(func() { stopSim(); hs.CloseClientConnections(); hs.Close(); <-simDone })

	ws := "ws" + strings.TrimPrefix(hs.URL, "http") + "/v2"
	var newest int64
	runUntil(t, []string{"--data-dir", dir, "--kraken-ws-url", ws, "--kraken-rest-url", hs.URL}, "candles of the present after the demo",
		func(c streams.Candle) (bool, string) {
			newest = max(newest, c.Start.Unix())
			return time.Since(c.Start) < 10*time.Minute, "newest " + time.Unix(newest, 0).UTC().Format(time.DateTime)
		})
}

// TestRunDemoForecasts (issue 14): `run --demo` publishes forecasts with
// calibrated intervals at every horizon from its first candles, the
// volatility model being seeded from the recording before the replay;
// /prediction/latest-prediction shows them and /prediction/model-evaluation
// says why no point model is promoted.
func TestRunDemoForecasts(t *testing.T) {
	ctx := t.Context()
	sys, stop := startTestSystemArgs(t, "--data-dir", t.TempDir(), "--demo", "--bcrypt-cost", "10")
	preds, err := sys.bus.JS.Stream(ctx, streams.StreamPredictions)
	if err != nil {
		t.Fatal(err)
	}
	subject := streams.PredictionSubject(streams.Interval1m, "BTC/USD")
	var first streams.Prediction
	// Progress is the newest minute forecast: the wait fails when the
	// forecasts stop moving on without one being calibrated. (The count
	// of PREDICTIONS would also grow with forecasts of minutes already
	// forecast, which bring calibration no closer.)
	var newest time.Time
	natstest.WaitProgress(t, time.Minute, "a forecast with intervals at every horizon", func() (bool, string) {
		m, err := preds.GetLastMsgForSubject(ctx, subject)
		if err != nil {
			return false, "no forecast"
		}
		p, err := streams.Decode[streams.Prediction](m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Forecasts) != 3 {
			t.Fatalf("forecasts at %d horizons: %+v", len(p.Forecasts), p.Forecasts)
		}
		if p.Start.After(newest) {
			newest = p.Start
		}
		for _, f := range p.Forecasts {
			if !f.Ready || len(f.Intervals) != 2 {
				return false, "newest " + newest.Format(time.DateTime)
			}
		}
		first = p
		return true, ""
	})
	if first.Model != streams.ModelNoChange || first.ModelID != streams.ModelNoChange || first.Lower >= first.Close || first.Upper <= first.Close || first.Sigma <= 0 {
		t.Fatalf("demo prediction %+v", first)
	}
	for i, f := range first.Forecasts {
		if f.Horizon != []int{1, 15, 60}[i] || f.Sigma <= 0 || f.Intervals[0].Level != 0.8 || f.Intervals[1].Level != 0.95 ||
			!(f.Intervals[1].Lower <= f.Intervals[0].Lower && f.Intervals[0].Upper <= f.Intervals[1].Upper) || f.Intervals[0].Coverage == nil {
			t.Fatalf("forecast at horizon %d: %+v", f.Horizon, f)
		}
		if i > 0 && f.Sigma <= first.Forecasts[i-1].Sigma {
			t.Fatalf("sigma does not grow with the horizon: %+v", first.Forecasts)
		}
	}

	base := "http://" + sys.Addr()
	resp, err := http.Post(base+"/auth/signup", "application/json", strings.NewReader(`{"username":"ann","password":"ann-password"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = http.Post(base+"/auth/login", "application/json", strings.NewReader(`{"username":"ann","password":"ann-password"}`))
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	err = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if err != nil || tok.AccessToken == "" {
		t.Fatalf("login = %d, %v", resp.StatusCode, err)
	}
	authed := func(path string, into any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s = %d", path, resp.StatusCode)
		}
		if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
			t.Fatal(err)
		}
	}
	var latest struct {
		Model     string                    `json:"model"`
		Forecasts []streams.HorizonForecast `json:"forecasts"`
	}
	authed("/prediction/latest-prediction?asset=BTC-USD", &latest)
	if latest.Model != streams.ModelNoChange || len(latest.Forecasts) != 3 || len(latest.Forecasts[2].Intervals) != 2 {
		t.Fatalf("latest prediction %+v", latest)
	}
	var ev map[string]any
	authed("/prediction/model-evaluation?asset=BTC-USD", &ev)
	if why, _ := ev["why"].(string); ev["model"] != streams.ModelNoChange || why == "" {
		t.Fatalf("model evaluation %v", ev)
	}
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
}
