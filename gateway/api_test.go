package gateway_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"

	"cryptostream/datatest"
	"cryptostream/gateway"
	"cryptostream/registry"
	"cryptostream/streams"
)

func TestAssets(t *testing.T) {
	s := newStack(t)
	admin := s.login(adminName, adminPass)
	user := s.signup("alice", "alice-password")

	if got := s.expect(s.call("GET", "/crypto/assets", user, nil), http.StatusOK).json(t)["assets"].([]any); len(got) != 0 {
		t.Fatalf("assets = %v", got)
	}
	pairs := s.expect(s.call("GET", "/crypto/kraken_assets", user, nil), http.StatusOK).json(t)["pairs"].([]any)
	if len(pairs) != 1 || pairs[0].(map[string]any)["symbol"] != "BTC/USD" || pairs[0].(map[string]any)["kraken_key"] != "XXBTZUSD" {
		t.Fatalf("kraken pairs = %v", pairs)
	}
	// Kraken's legacy name is accepted and mapped.
	a := s.expect(s.call("POST", "/crypto/assets", admin, map[string]string{"symbol": "xbt/usd"}), http.StatusCreated).json(t)
	if a["id"] != "BTC-USD" || a["symbol"] != "BTC/USD" || a["kraken_key"] != "XXBTZUSD" || a["added_by"] != adminName {
		t.Fatalf("added = %v", a)
	}
	// The pair list is cached: one fetch so far.
	if n := s.krakenN.Load(); n != 1 {
		t.Fatalf("kraken fetched %d times", n)
	}
	for _, c := range []struct {
		name, tok, method, path string
		body                    any
		status                  int
		code                    string
	}{
		{"duplicate", admin, "POST", "/crypto/assets", map[string]string{"symbol": "BTC-USD"}, 409, "asset_exists"},
		{"not on kraken", admin, "POST", "/crypto/assets", map[string]string{"symbol": "ETH/USD"}, 422, "unknown_pair"},
		{"not a pair", admin, "POST", "/crypto/assets", map[string]string{"symbol": "BTC"}, 400, "invalid_symbol"},
		{"sql", admin, "POST", "/crypto/assets", map[string]string{"symbol": "BTC/USD'; DROP TABLE assets;--"}, 400, "invalid_symbol"},
		{"wildcard", admin, "POST", "/crypto/assets", map[string]string{"symbol": "*/>"}, 400, "invalid_symbol"},
		{"unknown field", admin, "POST", "/crypto/assets", `{"symbol":"BTC/USD","x":1}`, 400, "malformed_body"},
		{"user adds", user, "POST", "/crypto/assets", map[string]string{"symbol": "BTC/USD"}, 403, "forbidden"},
		{"user deletes", user, "DELETE", "/crypto/assets/BTC-USD", nil, 403, "forbidden"},
		{"delete unknown", admin, "DELETE", "/crypto/assets/ETH-USD", nil, 404, "unknown_asset"},
		{"delete malformed", admin, "DELETE", "/crypto/assets/nope", nil, 400, "invalid_asset"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := s.call(c.method, c.path, c.tok, c.body)
			if r.status != c.status || r.errCode(t) != c.code {
				t.Fatalf("= %d %s", r.status, r.body)
			}
		})
	}
	list := s.expect(s.call("GET", "/crypto/assets", user, nil), http.StatusOK).json(t)["assets"].([]any)
	if len(list) != 1 {
		t.Fatalf("assets = %v", list)
	}
	// The ingester's view: the bucket holds a streams.Asset under AssetKey.
	kv, err := s.js.KeyValue(t.Context(), streams.BucketAssets)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(t.Context(), streams.AssetKey("BTC/USD"))
	if err != nil {
		t.Fatal(err)
	}
	var stored streams.Asset
	if err := json.Unmarshal(e.Value(), &stored); err != nil || stored.Symbol != "BTC/USD" || stored.V != streams.SchemaVersion {
		t.Fatalf("stored asset %s: %v", e.Value(), err)
	}
	s.expect(s.call("DELETE", "/crypto/assets/"+url.PathEscape("BTC/USD"), admin, nil), http.StatusNoContent)
	s.expect(s.call("DELETE", "/crypto/assets/BTC-USD", admin, nil), http.StatusNotFound)
	evs := s.auditEvents()
	if countAudit(evs, "asset.add", "ok", "BTC/USD") != 1 || countAudit(evs, "asset.delete", "ok", "BTC/USD") != 1 {
		t.Fatalf("audit = %+v", evs)
	}
}

func TestKrakenUnavailable(t *testing.T) {
	s := newStack(t)
	s.krakenDown.Store(true)
	admin := s.login(adminName, adminPass)
	for _, c := range []struct{ method, path string }{{"GET", "/crypto/kraken_assets"}, {"POST", "/crypto/assets"}} {
		var body any
		if c.method == "POST" {
			body = map[string]string{"symbol": "BTC/USD"}
		}
		r := s.call(c.method, c.path, admin, body)
		if r.status != http.StatusServiceUnavailable || r.errCode(t) != "kraken_unavailable" {
			t.Fatalf("%s %s = %d %s", c.method, c.path, r.status, r.body)
		}
	}
	// Once fetched, a failing Kraken does not break validation.
	s.krakenDown.Store(false)
	s.expect(s.call("GET", "/crypto/kraken_assets", admin, nil), http.StatusOK)
	s.krakenDown.Store(true)
	s.expect(s.call("POST", "/crypto/assets", admin, map[string]string{"symbol": "BTC/USD"}), http.StatusCreated)
}

func publishCandles(t testing.TB, s *stack, cs []streams.Candle) {
	t.Helper()
	for i := range cs {
		if _, err := streams.Publish(t.Context(), s.js, &cs[i]); err != nil {
			t.Fatal(err)
		}
	}
}

func TestHistory(t *testing.T) {
	s := newStack(t)
	user := s.signup("alice", "alice-password")
	candles := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 25)
	publishCandles(t, s, candles)

	// Page through everything with limit 10 and the cursor.
	var got []map[string]any
	path := "/crypto/asset_history/BTC-USD?limit=10"
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		m := s.expect(s.call("GET", path, user, nil), http.StatusOK).json(t)
		if m["asset"] != "BTC/USD" || m["interval"] != "1m" {
			t.Fatalf("page = %v", m)
		}
		for _, c := range m["candles"].([]any) {
			got = append(got, c.(map[string]any))
		}
		next, ok := m["next"].(string)
		if !ok {
			if m["next"] != nil {
				t.Fatalf("next = %v", m["next"])
			}
			break
		}
		path = "/crypto/asset_history/BTC-USD?limit=10&cursor=" + url.QueryEscape(next)
	}
	if len(got) != len(candles) {
		t.Fatalf("%d candles, want %d", len(got), len(candles))
	}
	for i, c := range got {
		want := candles[i]
		if c["time"] != want.Start.Format(time.RFC3339) || c["close"] != want.Close || c["open"] != want.Open ||
			c["volume"] != want.Volume || c["trades"] != float64(want.Trades) || c["quality"] != "imported" {
			t.Fatalf("candle %d = %v, want %+v", i, c, want)
		}
	}
	// from/to as unix seconds and RFC3339, escaped BTC/USD.
	from := candles[5].Start
	to := candles[8].Start
	for _, q := range []string{
		"from=" + strconv.FormatInt(from.Unix(), 10) + "&to=" + strconv.FormatInt(to.Unix(), 10),
		"from=" + url.QueryEscape(from.Format(time.RFC3339)) + "&to=" + url.QueryEscape(to.Format(time.RFC3339)),
	} {
		m := s.expect(s.call("GET", "/crypto/asset_history/"+url.PathEscape("BTC/USD")+"?"+q, user, nil), http.StatusOK).json(t)
		cs := m["candles"].([]any)
		if len(cs) != 3 || cs[0].(map[string]any)["time"] != from.Format(time.RFC3339) || m["next"] != nil {
			t.Fatalf("%s: %v", q, m)
		}
	}
	latest := s.expect(s.call("GET", "/crypto/asset_latest/BTC-USD", user, nil), http.StatusOK).json(t)
	if c := latest["candle"].(map[string]any); c["time"] != candles[len(candles)-1].Start.Format(time.RFC3339) {
		t.Fatalf("latest = %v", latest)
	}
	for _, c := range []struct {
		path   string
		status int
		code   string
	}{
		{"/crypto/asset_history/ETH-USD", 404, "unknown_asset"},
		{"/crypto/asset_latest/ETH-USD", 404, "unknown_asset"},
		{"/crypto/asset_history/BTC", 400, "invalid_asset"},
		{"/crypto/asset_history/" + url.PathEscape("BTC/USD' OR 1=1--"), 400, "invalid_asset"},
		{"/crypto/asset_history/BTC-USD?interval=7m", 400, "invalid_interval"},
		{"/crypto/asset_history/BTC-USD?from=yesterday", 400, "invalid_from"},
		{"/crypto/asset_history/BTC-USD?to=-5", 400, "invalid_to"},
		{"/crypto/asset_history/BTC-USD?limit=0", 400, "invalid_limit"},
		{"/crypto/asset_history/BTC-USD?cursor=abc", 400, "invalid_query"},
		{"/crypto/asset_history/BTC-USD?from=200&to=100", 400, "invalid_query"},
		{"/crypto/asset_latest/BTC-USD?interval=1h", 404, "unknown_asset"},
	} {
		r := s.call("GET", c.path, user, nil)
		if r.status != c.status || r.errCode(t) != c.code {
			t.Fatalf("GET %s = %d %s", c.path, r.status, r.body)
		}
	}
	// A tracked asset with no candles answers an empty page.
	admin := s.login(adminName, adminPass)
	s.expect(s.call("POST", "/crypto/assets", admin, map[string]string{"symbol": "BTC/USD"}), http.StatusCreated)
	m := s.expect(s.call("GET", "/crypto/asset_history/BTC-USD?interval=1h", user, nil), http.StatusOK).json(t)
	if cs := m["candles"].([]any); len(cs) != 0 {
		t.Fatalf("1h candles = %v", cs)
	}
}

func samplePrediction(start time.Time, close float64) streams.Prediction {
	return streams.Prediction{Symbol: "BTC/USD", Interval: streams.Interval1m, Start: start, Target: start.Add(time.Minute), Horizon: 1,
		ModelID: "m1", Close: close, LogReturn: 0.0001, PredictedClose: close + 1, Lower: close - 5, Upper: close + 7,
		Model: streams.ModelLinear, Sigma: 0.0002, Forecasts: []streams.HorizonForecast{
			{Horizon: 1, Target: start.Add(time.Minute), Model: streams.ModelLinear, ModelID: "m1", LogReturn: 0.0001, PredictedClose: close + 1,
				Sigma: 0.0002, VolatilityModel: "combined", Ready: true, Intervals: []streams.ForecastInterval{{Level: 0.95, Lower: close - 5, Upper: close + 7, Covered: 0}}},
			{Horizon: 15, Target: start.Add(15 * time.Minute), Model: streams.ModelNoChange, ModelID: streams.ModelNoChange, PredictedClose: close},
		}}
}

func putRegistry(t testing.TB, s *stack, key string, v any) {
	t.Helper()
	kv, err := s.js.KeyValue(t.Context(), streams.BucketModelRegistry)
	if err != nil {
		t.Fatal(err)
	}
	b, ok := v.([]byte)
	if !ok {
		if b, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.Put(t.Context(), key, b); err != nil {
		t.Fatal(err)
	}
}

func TestPredictionEndpoints(t *testing.T) {
	s := newStack(t)
	user := s.signup("alice", "alice-password")
	admin := s.login(adminName, adminPass)
	for _, p := range []string{"/prediction/latest-prediction", "/prediction/best-model"} {
		r := s.call("GET", p, user, nil)
		if r.status != http.StatusNotFound {
			t.Fatalf("%s before any model = %d %s", p, r.status, r.body)
		}
		r.errCode(t)
	}
	// With no champion the evaluation says why, and that no-change is
	// what is published.
	ev := s.expect(s.call("GET", "/prediction/model-evaluation", user, nil), http.StatusOK).json(t)
	if ev["model"] != "no-change" || ev["promoted"] != false || !strings.Contains(ev["why"].(string), "no point model trained") {
		t.Fatalf("evaluation before any model = %v", ev)
	}
	start := time.Unix(1677646800, 0).UTC()
	for i := range 3 {
		p := samplePrediction(start.Add(time.Duration(i)*time.Minute), 23500+float64(i))
		if _, err := streams.Publish(t.Context(), s.js, &p); err != nil {
			t.Fatal(err)
		}
	}
	lp := s.expect(s.call("GET", "/prediction/latest-prediction?asset=BTC-USD", user, nil), http.StatusOK).json(t)
	if lp["time"] != start.Add(2*time.Minute).Format(time.RFC3339) || lp["predicted_close"] != 23503.0 || lp["asset"] != "BTC/USD" ||
		lp["model"] != "linear" || len(lp["forecasts"].([]any)) != 2 {
		t.Fatalf("latest prediction = %v", lp)
	}
	// asset defaults to BTC/USD.
	s.expect(s.call("GET", "/prediction/latest-prediction", user, nil), http.StatusOK)

	m1 := streams.ModelRecord{ID: "m1", Symbol: "BTC/USD", Interval: streams.Interval1m, Horizon: 1, Features: []string{"r1"}, Coefficients: []float64{0, 0.1},
		Metrics: map[string]streams.Metrics{"test": {N: 100, MSE: 1.5, R2: 0.1}}, Champion: true, Decision: "beats baseline", CreatedAt: start}
	m2 := m1
	m2.ID, m2.Symbol, m2.Champion = "m2", "ETH/USD", false
	putRegistry(t, s, streams.ModelKey("m1"), m1)
	putRegistry(t, s, streams.ModelKey("m2"), m2)
	putRegistry(t, s, streams.ChampionKey(streams.Interval1m, "BTC/USD"), []byte("m1"))

	best := s.expect(s.call("GET", "/prediction/best-model?asset=BTC/USD", user, nil), http.StatusOK).json(t)
	if best["id"] != "m1" || best["champion"] != true {
		t.Fatalf("best = %v", best)
	}
	// A rejected model of the series, newer: the evaluation of a series
	// without a champion gives its decision.
	m3 := m1
	m3.ID, m3.Symbol, m3.Champion, m3.Decision, m3.CreatedAt = "m3", "ETH/USD", false, "not promoted: against no-change DM -0.50, p 0.31", start.Add(time.Hour)
	putRegistry(t, s, streams.ModelKey("m3"), m3)
	putRegistry(t, s, streams.ForecastKey(streams.Interval1m, "ETH/USD"), streams.ForecastScore{Symbol: "ETH/USD", Interval: streams.Interval1m,
		Horizons: []streams.HorizonScore{{Horizon: 1, Week: streams.ScoreWindow{N: 10, Coverage: []streams.LevelCoverage{{Level: 0.8, Coverage: 0.7}}}, Failing: true}}, UpdatedAt: start})
	ev = s.expect(s.call("GET", "/prediction/model-evaluation?asset=ETH-USD", user, nil), http.StatusOK).json(t)
	if ev["model"] != "no-change" || !strings.Contains(ev["why"].(string), "the latest, m3, not promoted: against no-change DM") ||
		ev["forecast"].(map[string]any)["horizons"].([]any)[0].(map[string]any)["failing"] != true {
		t.Fatalf("evaluation without a champion = %v", ev)
	}
	ev = s.expect(s.call("GET", "/prediction/model-evaluation", user, nil), http.StatusOK).json(t)
	if ev["model_id"] != "m1" || ev["promoted"] != true || ev["metrics"].(map[string]any)["test"].(map[string]any)["mse"] != 1.5 {
		t.Fatalf("evaluation = %v", ev)
	}
	if ms := s.expect(s.call("GET", "/prediction/models", user, nil), http.StatusOK).json(t)["models"].([]any); len(ms) != 3 {
		t.Fatalf("models = %v", ms)
	}
	if ms := s.expect(s.call("GET", "/prediction/models?asset=ETH-USD", user, nil), http.StatusOK).json(t)["models"].([]any); len(ms) != 2 {
		t.Fatalf("ETH models = %v", ms)
	}
	// A champion stored as a JSON string works too.
	putRegistry(t, s, streams.ChampionKey(streams.Interval1m, "BTC/USD"), "m2")
	if best := s.expect(s.call("GET", "/prediction/best-model", user, nil), http.StatusOK).json(t); best["id"] != "m2" {
		t.Fatalf("best = %v", best)
	}

	// Jobs.
	jobs, err := s.js.Stream(t.Context(), streams.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.OpenJobs(t.Context(), s.js, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []streams.JobKind{streams.JobTrain, streams.JobScore, streams.JobPredict} {
		r := s.expect(s.call("POST", "/prediction/"+string(kind), admin, map[string]any{"asset": "BTC-USD", "interval": "5m", "params": map[string]string{"window": "30"}}), http.StatusAccepted)
		acc := r.json(t)
		id := acc["job_id"].(string)
		if acc["state"] != "queued" || r.header.Get("Location") != "/prediction/jobs/"+id {
			t.Fatalf("accepted = %v", acc)
		}
		st := s.expect(s.call("GET", "/prediction/jobs/"+id, user, nil), http.StatusOK).json(t)
		if st["state"] != "queued" || st["kind"] != string(kind) || st["asset"] != "BTC/USD" || st["interval"] != "5m" {
			t.Fatalf("status = %v", st)
		}
		// The status is registry's, which the workers move forward.
		if rst, err := reg.Get(t.Context(), id); err != nil || rst.State != streams.JobQueued || rst.Job.RequestedBy != adminName || rst.V != streams.SchemaVersion {
			t.Fatalf("registry status = %+v, %v", rst, err)
		}
		msg, err := jobs.GetLastMsgForSubject(t.Context(), streams.JobSubject(kind))
		if err != nil {
			t.Fatal(err)
		}
		job, err := streams.Decode[streams.Job](msg.Data)
		if err != nil || job.ID != id || job.Symbol != "BTC/USD" || job.Interval != streams.Interval5m || job.Params["window"] != "30" || job.RequestedBy != adminName {
			t.Fatalf("queued job = %+v, %v", job, err)
		}
	}
	// An empty body queues for the defaults.
	s.expect(s.do("POST", "/prediction/train", admin, "", nil), http.StatusAccepted)
	for _, c := range []struct {
		tok, method, path string
		body              any
		status            int
		code              string
	}{
		{user, "POST", "/prediction/train", nil, 403, "forbidden"},
		{admin, "POST", "/prediction/train", `{"asset":"BTC-USD","bogus":true}`, 400, "malformed_body"},
		{admin, "POST", "/prediction/score", `{"asset":"nope"}`, 400, "invalid_asset"},
		{admin, "POST", "/prediction/predict", `{"interval":"2m"}`, 400, "invalid_interval"},
		{user, "GET", "/prediction/jobs/0123456789abcdef0123456789abcdef", nil, 404, "job_not_found"},
		{user, "GET", "/prediction/jobs/..%2F..%2Fetc", nil, 404, "job_not_found"},
		{user, "GET", "/prediction/best-model?asset=ETH-USD", nil, 404, "no_champion"},
		{user, "GET", "/prediction/latest-prediction?asset=BTC", nil, 400, "invalid_asset"},
		{user, "GET", "/nope", nil, 404, "not_found"},
	} {
		r := s.call(c.method, c.path, c.tok, c.body)
		if r.status != c.status || r.errCode(t) != c.code {
			t.Fatalf("%s %s = %d %s", c.method, c.path, r.status, r.body)
		}
	}
}

func TestMiddleware(t *testing.T) {
	s := newStack(t, func(c *gateway.Config, _ *gateway.Deps) { c.CORSOrigins = []string{"https://app.example"} })
	tok := s.login(adminName, adminPass)

	req, _ := http.NewRequest("OPTIONS", s.url+"/crypto/assets", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight = %d %v", resp.StatusCode, resp.Header)
	}
	req.Header.Set("Origin", "https://evil.example")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("an unlisted origin was allowed: %v", resp.Header)
	}

	// The request id is echoed when sane and made up otherwise.
	req, _ = http.NewRequest("GET", s.url+"/crypto/assets", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("X-Request-Id", "abc-123")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("X-Request-Id") != "abc-123" {
		t.Fatalf("request id = %q", resp.Header.Get("X-Request-Id"))
	}
	req.Header.Set("X-Request-Id", "bad id "+strings.Repeat("x", 80))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if id := resp.Header.Get("X-Request-Id"); len(id) != 32 {
		t.Fatalf("request id for a bad one = %q", id)
	}

	// Per-route metrics with the mux pattern as the label.
	s.call("GET", "/crypto/asset_latest/ETH-USD", tok, nil)
	body := string(metricsText(t, s))
	for _, want := range []string{
		`cryptostream_gateway_requests_total{code="200",route="GET /crypto/assets"} 2`,
		`cryptostream_gateway_request_errors_total{class="client",route="GET /crypto/asset_latest/{asset}"} 1`,
		`cryptostream_gateway_request_duration_seconds_count{route="POST /auth/login"} 1`,
		`cryptostream_gateway_logins_total{outcome="ok"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func metricsText(t *testing.T, s *stack) []byte {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&buf, mf); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func TestAlertHistory(t *testing.T) {
	s := newStack(t)
	user := s.signup("alice", "alice-password")
	empty := s.expect(s.call("GET", "/crypto/alert_history/BTC-USD", user, nil), http.StatusOK).json(t)
	if alerts, _ := empty["alerts"].([]any); empty["asset"] != "BTC/USD" || alerts == nil || len(alerts) != 0 {
		t.Fatalf("alert history before any alert = %v", empty)
	}
	at := time.Unix(1677646800, 0).UTC()
	for i := 2; i >= 0; i-- { // newest first: the answer must still be oldest first
		a := streams.Alert{ID: fmt.Sprintf("a%d", i), RuleID: "move", Symbol: "BTC/USD", Interval: streams.Interval1m,
			Kind: "price_move", Message: "moved", Value: float64(i), Threshold: 0.01, At: at.Add(time.Duration(i) * time.Minute)}
		if _, err := streams.Publish(t.Context(), s.js, &a); err != nil {
			t.Fatal(err)
		}
	}
	got := s.expect(s.call("GET", "/crypto/alert_history/"+url.PathEscape("BTC/USD")+"?limit=2", user, nil), http.StatusOK).json(t)
	alerts := got["alerts"].([]any)
	if len(alerts) != 2 || alerts[0].(map[string]any)["id"] != "a0" || alerts[1].(map[string]any)["id"] != "a1" {
		t.Fatalf("alert history = %v", got)
	}
	from := at.Add(time.Minute).Format(time.RFC3339)
	got = s.expect(s.call("GET", "/crypto/alert_history/BTC-USD?from="+from, user, nil), http.StatusOK).json(t)
	if alerts := got["alerts"].([]any); len(alerts) != 2 || alerts[0].(map[string]any)["at"] != from {
		t.Fatalf("alert history from %s = %v", from, got)
	}
	for path, code := range map[string]string{
		"/crypto/alert_history/BTC-USD?limit=0":                        "invalid_limit",
		"/crypto/alert_history/BTC-USD?from=monday":                    "invalid_from",
		"/crypto/alert_history/" + url.PathEscape("BTC/USD' OR 1=1--"): "invalid_asset",
	} {
		r := s.call("GET", path, user, nil)
		if r.status != http.StatusBadRequest || r.errCode(t) != code {
			t.Errorf("%s = %d %s, want 400 %s", path, r.status, r.body, code)
		}
	}
	if r := s.call("GET", "/crypto/alert_history/BTC-USD", "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("alert history without a token = %d", r.status)
	}
}
