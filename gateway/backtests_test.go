package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/backtest"
	"cryptostream/datatest"
	"cryptostream/natstest"
	"cryptostream/streams"
)

// startBacktestWorker runs the worker that takes backtest jobs from JOBS.
func startBacktestWorker(t *testing.T, s *stack) {
	t.Helper()
	w, err := backtest.NewWorker(backtest.WorkerConfig{}, backtest.WorkerDeps{JS: s.js, Log: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

// waitBacktest polls a backtest's status until it is done or failed.
func waitBacktest(t *testing.T, s *stack, token, id string) map[string]any {
	t.Helper()
	var st map[string]any
	natstest.WaitProgress(t, time.Minute, "backtest "+id, func() (bool, string) {
		st = s.expect(s.call("GET", "/backtests/"+id, token, nil), http.StatusOK).json(t)
		state, _ := st["state"].(string)
		return state == string(streams.JobDone) || state == string(streams.JobFailed), fmt.Sprint(state, st["progress"])
	})
	return st
}

// TestBacktestsAPI: an admin queues a backtest, a worker runs it from
// JOBS, and its status carries the report and its page; a user may not
// reach any of it, bad input is a 400, and a model that does not exist
// fails the job with the reason.
func TestBacktestsAPI(t *testing.T) {
	s := newStack(t)
	startBacktestWorker(t, s)
	admin := s.login(adminName, adminPass)
	user := s.signup("bob", "bob-password")
	cs := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 900)
	publishCandles(t, s, cs)
	body := map[string]any{"asset": "BTC/USD", "interval": "1m", "from": cs[300].Start.Format(time.RFC3339), "to": cs[899].Start.Format(time.RFC3339),
		"sweep": []string{"threshold=0,0.0001"}}

	s.expect(s.call("POST", "/backtests", user, body), http.StatusForbidden)
	bad := map[string]any{"asset": "BTC/USD", "from": cs[899].Start.Format(time.RFC3339), "to": cs[0].Start.Format(time.RFC3339)}
	if code := s.expect(s.call("POST", "/backtests", admin, bad), http.StatusBadRequest).errCode(t); code != "invalid_backtest" {
		t.Fatalf("from after to: %s", code)
	}
	r := s.expect(s.call("POST", "/backtests", admin, body), http.StatusAccepted).json(t)
	id, _ := r["id"].(string)
	st := waitBacktest(t, s, admin, id)
	if st["state"] != string(streams.JobDone) {
		t.Fatalf("backtest ended %v", st)
	}
	var rep backtest.Report
	raw, _ := json.Marshal(st["report"])
	if err := json.Unmarshal(raw, &rep); err != nil || rep.Version != backtest.ReportVersion || rep.Counts.Candles != 600 || rep.Sweep == nil || len(rep.Sweep.Results) != 2 {
		t.Fatalf("report %s (%v)", raw, err)
	}
	page := s.expect(s.call("GET", "/backtests/"+id+"/report.html", admin, nil), http.StatusOK)
	if !strings.HasPrefix(page.header.Get("Content-Type"), "text/html") || !strings.Contains(page.header.Get("Content-Security-Policy"), "default-src 'none'") ||
		!strings.Contains(string(page.body), "<svg") {
		t.Fatalf("report page: %v %.200s", page.header, page.body)
	}
	var list []map[string]any
	if err := json.Unmarshal(s.expect(s.call("GET", "/backtests", admin, nil), http.StatusOK).body, &list); err != nil || len(list) != 1 || list[0]["id"] != id {
		t.Fatalf("list %v (%v)", list, err)
	}
	for _, path := range []string{"/backtests", "/backtests/" + id, "/backtests/" + id + "/report.html"} {
		s.expect(s.call("GET", path, user, nil), http.StatusForbidden)
	}
	s.expect(s.call("GET", "/backtests/"+strings.Repeat("0", 32), admin, nil), http.StatusNotFound)

	body["model"] = "m-missing"
	r = s.expect(s.call("POST", "/backtests", admin, body), http.StatusAccepted).json(t)
	st = waitBacktest(t, s, admin, r["id"].(string))
	if st["state"] != string(streams.JobFailed) || !strings.Contains(fmt.Sprint(st["error"]), "m-missing") {
		t.Fatalf("backtest of a missing model: %v", st)
	}
	s.expect(s.call("GET", "/backtests/"+r["id"].(string)+"/report.html", admin, nil), http.StatusConflict)
}
