package gateway_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"cryptostream/gateway"
)

// The prediction history pages a series' past predictions by candle time,
// bounded in count and range, keeps the primary horizon unless asked for
// all, needs a token, and tells an unknown asset from a tracked one with
// nothing yet.
func TestPredictionHistory(t *testing.T) {
	s := newStack(t)
	user := s.signup("alice", "alice-password")
	admin := s.login(adminName, adminPass)
	s.expect(s.call("POST", "/crypto/assets", admin, map[string]string{"symbol": "BTC/USD"}), http.StatusCreated)

	start := time.Unix(1677646800, 0).UTC()
	const n = 30
	for i := range n {
		p := samplePrediction(start.Add(time.Duration(i)*time.Minute), 23500+float64(i))
		publish(t, s, &p)
	}
	eth := samplePrediction(start, 1600)
	eth.Symbol = "ETH/USD"
	publish(t, s, &eth)

	from := start.Unix()
	page := func(path string) map[string]any {
		t.Helper()
		return s.expect(s.call("GET", path, user, nil), http.StatusOK).json(t)
	}
	times := func(m map[string]any) []string {
		var out []string
		for _, p := range m["predictions"].([]any) {
			out = append(out, p.(map[string]any)["time"].(string))
		}
		return out
	}
	// Three pages of 12, 12 and 6, the cursor leading from one to the next.
	var got []string
	path := fmt.Sprintf("/prediction/history?asset=BTC-USD&interval=1m&from=%d&to=%d&limit=12", from, from+n*60)
	for next := ""; ; {
		p := page(path + next)
		got = append(got, times(p)...)
		c, _ := p["next"].(string)
		if c == "" {
			break
		}
		next = "&cursor=" + c
	}
	if len(got) != n {
		t.Fatalf("paged %d predictions, want %d: %v", len(got), n, got)
	}
	for i, ts := range got {
		if want := start.Add(time.Duration(i) * time.Minute).Format(time.RFC3339); ts != want {
			t.Fatalf("prediction %d at %s, want %s", i, ts, want)
		}
	}
	// [from, to) on the candle the prediction was made on; the primary
	// horizon only, unless all are asked for.
	p := page(fmt.Sprintf("/prediction/history?asset=BTC/USD&from=%d&to=%d", from+5*60, from+8*60))
	ps := p["predictions"].([]any)
	if len(ps) != 3 || p["asset"] != "BTC/USD" || p["next"] != nil {
		t.Fatalf("a 3-minute range = %v", p)
	}
	first := ps[0].(map[string]any)
	if fs := first["forecasts"].([]any); len(fs) != 1 || fs[0].(map[string]any)["horizon"] != 1.0 || first["predicted_close"] != 23506.0 || first["asset"] != "BTC/USD" {
		t.Fatalf("primary horizon view = %v", first)
	}
	all := page(fmt.Sprintf("/prediction/history?asset=BTC-USD&from=%d&to=%d&horizons=all", from+5*60, from+6*60))
	if fs := all["predictions"].([]any)[0].(map[string]any)["forecasts"].([]any); len(fs) != 2 {
		t.Fatalf("horizons=all gave %d forecasts", len(fs))
	}
	// A tracked asset with none in range is an empty answer; an unknown one
	// is 404.
	if ps := page(fmt.Sprintf("/prediction/history?asset=BTC-USD&from=%d&to=%d", from-3600, from))["predictions"].([]any); len(ps) != 0 {
		t.Fatalf("before the first prediction: %v", ps)
	}
	for _, c := range []struct {
		path   string
		status int
		code   string
	}{
		{fmt.Sprintf("/prediction/history?asset=DOGE-USD&from=%d&to=%d", from, from+60), http.StatusNotFound, "unknown_asset"},
		{fmt.Sprintf("/prediction/history?from=%d&to=%d", from, from+int64(gateway.MaxPredictionSpan/time.Second)+1), http.StatusBadRequest, "invalid_range"},
		{fmt.Sprintf("/prediction/history?from=%d&to=%d&limit=1001", from, from+60), http.StatusBadRequest, "invalid_limit"},
		{fmt.Sprintf("/prediction/history?from=%d&to=%d", from+60, from), http.StatusBadRequest, "invalid_query"},
		{fmt.Sprintf("/prediction/history?from=%d&to=%d&cursor=soon", from, from+60), http.StatusBadRequest, "invalid_query"},
		{fmt.Sprintf("/prediction/history?from=%d&to=%d&horizons=some", from, from+60), http.StatusBadRequest, "invalid_horizons"},
		{"/prediction/history?interval=2m", http.StatusBadRequest, "invalid_interval"},
		{"/prediction/history?asset=bitcoin", http.StatusBadRequest, "invalid_asset"},
		// No to is now, and no from is the day before it: these are years old.
		{"/prediction/history?asset=BTC-USD", http.StatusOK, ""},
		{fmt.Sprintf("/prediction/history?from=%d", from), http.StatusBadRequest, "invalid_range"},
	} {
		r := s.call("GET", c.path, user, nil)
		if r.status != c.status {
			t.Errorf("%s = %d %s, want %d", c.path, r.status, r.body, c.status)
			continue
		}
		if c.code != "" {
			if code := r.errCode(t); code != c.code {
				t.Errorf("%s: code %s, want %s", c.path, code, c.code)
			}
		} else if ps := r.json(t)["predictions"].([]any); len(ps) != 0 {
			t.Errorf("%s: the default range holds %d predictions of 2023", c.path, len(ps))
		}
	}
	if r := s.call("GET", fmt.Sprintf("/prediction/history?from=%d", from), "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("without a token: %d", r.status)
	}
}
