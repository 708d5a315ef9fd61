package loadtest_test

import (
	"bytes"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"cryptostream/gateway/auth"
	"cryptostream/gateway/hub"
	"cryptostream/loadtest"
	"cryptostream/natstest"
	"cryptostream/streams"
)

func TestCheckLoopback(t *testing.T) {
	for _, ok := range []string{"http://127.0.0.1:8080", "http://localhost:1", "nats://127.0.0.2:4222", "http://[::1]:80"} {
		if err := loadtest.CheckLoopback(ok); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"http://10.0.0.1:8080", "http://example.com", "nats://0.0.0.0:4222", "http://[::]:80", "://x"} {
		if err := loadtest.CheckLoopback(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// A scenario against a real hub on a real JetStream: every client
// connects, receives what is published, and nobody is closed.
func TestRunWS(t *testing.T) {
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv)
	if err := streams.Ensure(t.Context(), js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	tokens, err := auth.NewTokens(bytes.Repeat([]byte("k"), 32), time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := tokens.Issue(streams.User{ID: "u1", Username: "alice", Role: streams.RoleUser})
	if err != nil {
		t.Fatal(err)
	}
	// The gateway's write delay (flusher rounds); a small send buffer and
	// SlowAfter, so that the slow client is found within the run.
	h, err := hub.New(hub.Config{WriteDelay: hub.DefaultWriteDelay, SendBuffer: 4096, SlowAfter: 300 * time.Millisecond}, hub.Deps{Source: js, Metrics: reg, Log: slog.New(slog.DiscardHandler), Verify: tokens.Verify})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /ws", h)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	hs := httptest.NewServer(mux)
	t.Cleanup(func() { h.Shutdown(); hs.Close() })

	res, err := loadtest.RunWS(t.Context(), loadtest.WSConfig{
		URL: hs.URL, Token: tok, Clients: 20, Busy: "BTC/USD", Extra: []string{"ETH/USD", "SOL/USD"}, ExtraEvery: 4,
		Rate: 200, ExtraRate: 20, Slow: 1, Resumers: 4, CandleRate: 20, Warmup: 200 * time.Millisecond, Duration: 2 * time.Second, Drain: 500 * time.Millisecond,
	}, js)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	// Every resumer dropped and resumed; across the seam it got every
	// candle once.
	if r := res.Resume; r.Clients != 4 || r.Resumed != 4 || r.Owed == 0 || r.Missing != 0 || r.Duplicates != 0 || len(r.Errors) != 0 {
		t.Fatalf("resume: %+v", r)
	}
	// The slow client finds the 4008 close frame behind what its socket
	// holds, and the gateway counted it.
	if res.SlowClosed != 1 || res.ServerSlowCloses != 1 || res.Closes["4008"] != 1 {
		t.Fatalf("slow client: %+v", res)
	}
	if res.Connected != 21 || res.Channels != 3 || res.ClosedHealthy != 0 || len(res.Closes) != 1 {
		t.Fatalf("result %+v", res)
	}
	if res.EventsPublished == 0 || res.Delivered == 0 || res.Delivered > res.Offered || res.P99 < res.P50 || res.Max < res.P99 {
		t.Fatalf("result %+v", res)
	}
	// The gateway's stage histograms saw the window's events.
	if len(res.Stages) != 5 {
		t.Fatalf("stages %+v", res.Stages)
	}
	for _, st := range res.Stages {
		if st.Count == 0 || st.P99 < st.P50 {
			t.Fatalf("stage %+v", st)
		}
	}
}

// One answer held back for a while: in the open loop every request due
// meanwhile waits behind it, and its latency runs from when it was due, so
// a quarter of the window's requests are at least half the stall late. A
// closed loop, or latency from the send, would show one slow request.
func TestRunRESTOpenLoopCountsTheWaitBehindAStall(t *testing.T) {
	const stall = 100 * time.Millisecond
	var first sync.Once
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		first.Do(func() { time.Sleep(stall) })
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"hello":"world"}`))
	}))
	t.Cleanup(hs.Close)

	res, err := loadtest.RunREST(t.Context(), loadtest.RESTConfig{
		URL: hs.URL, MetricsURL: "none", Token: "tok", Path: "/x", Concurrency: 1, Rate: 1000, Duration: 2 * stall,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if due := res.Requests + res.Unsent; due < 199 || due > 201 {
		t.Fatalf("%d requests and %d unsent, want the 200 due in the window", res.Requests, res.Unsent)
	}
	if res.Status[http.StatusOK] != res.Requests {
		t.Fatalf("status %v", res.Status)
	}
	if res.P99 < stall/2 || res.Max < stall {
		t.Fatalf("p99 %s max %s: the requests due during the %s stall are not counted from when they were due", res.P99, res.Max, stall)
	}
}

// The closed loop against a reference without /metrics; every answer is
// read on the kept-alive connections, a refused token as well.
func TestRunRESTClosedLoop(t *testing.T) {
	var conns atomic.Int64
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		_, _ = w.Write([]byte(`{}`))
	}))
	hs.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	hs.Start()
	t.Cleanup(hs.Close)
	for _, tc := range []struct {
		token string
		code  int
	}{{"tok", http.StatusOK}, {"bad", http.StatusUnauthorized}} {
		// A closed loop counts what completes in its window: on a busy
		// machine a short window can pass before the first answer, so the
		// window doubles until some requests were counted.
		var res loadtest.RESTResult
		for window := 100 * time.Millisecond; res.Requests == 0; window *= 2 {
			conns.Store(0)
			var err error
			res, err = loadtest.RunREST(t.Context(), loadtest.RESTConfig{
				URL: hs.URL, MetricsURL: "none", Token: tc.token, Path: "/x", Concurrency: 4, Warmup: 10 * time.Millisecond, Duration: window,
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if res.Status[tc.code] != res.Requests || res.Unsent != 0 {
			t.Fatalf("token %s: %v", tc.token, res)
		}
		if n := conns.Load(); n != 4 {
			t.Fatalf("token %s: %d connections for 4 keep-alive clients", tc.token, n)
		}
	}
}
