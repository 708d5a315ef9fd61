package gateway_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"cryptostream/datatest"
	"cryptostream/streams"
)

type openapi struct {
	Paths      map[string]map[string]operation `json:"paths"`
	Components struct {
		Schemas map[string]map[string]any `json:"schemas"`
	} `json:"components"`
}

type operation struct {
	Security  []any `json:"security"`
	Responses map[string]struct {
		Content map[string]struct {
			Schema map[string]any `json:"schema"`
		} `json:"content"`
	} `json:"responses"`
}

// conforms checks v against a schema: types, required properties, and no
// property the document does not name.
func (d *openapi) conforms(schema map[string]any, v any, at string) error {
	if ref, ok := schema["$ref"].(string); ok {
		return d.conforms(d.Components.Schemas[strings.TrimPrefix(ref, "#/components/schemas/")], v, at)
	}
	if v == nil {
		if schema["nullable"] == true {
			return nil
		}
		return fmt.Errorf("%s: null where %v is documented", at, schema["type"])
	}
	switch schema["type"] {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: %T, want object", at, v)
		}
		props, _ := schema["properties"].(map[string]any)
		req, _ := schema["required"].([]any)
		for _, r := range req {
			if _, ok := m[r.(string)]; !ok {
				return fmt.Errorf("%s: required %q missing", at, r)
			}
		}
		for k, val := range m {
			if ps, ok := props[k].(map[string]any); ok {
				if err := d.conforms(ps, val, at+"."+k); err != nil {
					return err
				}
				continue
			}
			switch ap := schema["additionalProperties"].(type) {
			case bool:
				if !ap {
					return fmt.Errorf("%s: undocumented field %q", at, k)
				}
			case map[string]any:
				if err := d.conforms(ap, val, at+"."+k); err != nil {
					return err
				}
			}
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%s: %T, want array", at, v)
		}
		items, _ := schema["items"].(map[string]any)
		for i, e := range a {
			if err := d.conforms(items, e, at+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
	case "string":
		if _, ok := v.(string); !ok {
			return fmt.Errorf("%s: %T, want string", at, v)
		}
	case "number":
		if _, ok := v.(float64); !ok {
			return fmt.Errorf("%s: %T, want number", at, v)
		}
	case "integer":
		if f, ok := v.(float64); !ok || f != float64(int64(f)) {
			return fmt.Errorf("%s: %v, want integer", at, v)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%s: %T, want boolean", at, v)
		}
	}
	return nil
}

// TestOpenAPIMatchesHandlers drives every documented operation through the
// real handlers and checks each answer against the document: the status is
// documented for the operation and the body conforms to its schema.
func TestOpenAPIMatchesHandlers(t *testing.T) {
	s := newStack(t)
	r := s.expect(s.call("GET", "/openapi.json", "", nil), http.StatusOK)
	var doc openapi
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(r.body, &raw); err != nil || raw["openapi"] == nil {
		t.Fatalf("not an OpenAPI document: %v", err)
	}

	admin := s.login(adminName, adminPass)
	user := s.signup("bob", "bob-password")
	publishCandles(t, s, datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 5))
	p := samplePrediction(time.Unix(1677646800, 0).UTC(), 23500)
	publish(t, s, &p)
	putRegistry(t, s, streams.ModelKey("m1"), streams.ModelRecord{ID: "m1", Symbol: "BTC/USD", Interval: streams.Interval1m, Horizon: 1,
		Features: []string{"r1"}, Coefficients: []float64{0, 1}, Metrics: map[string]streams.Metrics{"test": {N: 1}}, CreatedAt: time.Now()})
	putRegistry(t, s, streams.ChampionKey(streams.Interval1m, "BTC/USD"), []byte("m1"))

	covered := map[string]bool{} // "METHOD template" answered with success
	check := func(method, template, path, tok string, body any) reply {
		t.Helper()
		op, ok := doc.Paths[template][strings.ToLower(method)]
		if !ok {
			t.Fatalf("%s %s is not in the document", method, template)
		}
		r := s.call(method, path, tok, body)
		resp, ok := op.Responses[strconv.Itoa(r.status)]
		if !ok {
			t.Fatalf("%s %s answered %d, not documented; body %s", method, path, r.status, r.body)
		}
		if c, ok := resp.Content["application/json"]; ok {
			var v any
			if err := json.Unmarshal(r.body, &v); err != nil {
				t.Fatalf("%s %s: body %q: %v", method, path, r.body, err)
			}
			if err := doc.conforms(c.Schema, v, method+" "+template); err != nil {
				t.Fatalf("%v; body %s", err, r.body)
			}
		} else if _, ok := resp.Content["text/html"]; ok {
			if !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
				t.Fatalf("%s %s: %d documented as HTML, sent %q", method, path, r.status, r.header.Get("Content-Type"))
			}
		} else if len(r.body) > 0 {
			t.Fatalf("%s %s: %d documented without a body, got %s", method, path, r.status, r.body)
		}
		if r.status < 300 {
			covered[method+" "+template] = true
		}
		return r
	}

	check("POST", "/auth/signup", "/auth/signup", "", map[string]string{"username": "carol", "password": "carol-password", "email": "c@x.io"})
	check("POST", "/auth/signup", "/auth/signup", "", map[string]string{"username": "carol", "password": "carol-password"})
	check("POST", "/auth/login", "/auth/login", "", map[string]string{"username": "carol", "password": "carol-password"})
	check("POST", "/auth/login", "/auth/login", "", map[string]string{"username": "carol", "password": "wrong-password"})
	check("GET", "/auth/users/me", "/auth/users/me", user, nil)
	check("PUT", "/auth/users/me", "/auth/users/me", user, map[string]string{"full_name": "Bob"})
	check("PUT", "/auth/user/me", "/auth/user/me", user, map[string]string{"full_name": "Bob"})
	check("GET", "/auth/users/me/preferences", "/auth/users/me/preferences", user, nil)
	check("PUT", "/auth/users/me/preferences", "/auth/users/me/preferences", user, map[string]string{"interval": "1m"})
	check("PUT", "/auth/users/me/preferences", "/auth/users/me/preferences", user, map[string]string{"interval": "2m"})
	check("GET", "/auth/users", "/auth/users", admin, nil)
	check("GET", "/auth/users", "/auth/users", user, nil)
	check("PUT", "/auth/users/{username}/role", "/auth/users/bob/role", admin, map[string]string{"role": "admin"})
	user = s.login("bob", "bob-password") // the role change revoked bob's token
	check("PUT", "/auth/users/{username}/role", "/auth/users/nobody/role", admin, map[string]string{"role": "admin"})
	check("DELETE", "/auth/users/{username}", "/auth/users/carol", admin, nil)
	check("DELETE", "/auth/users/{username}", "/auth/users/carol", admin, nil)
	check("GET", "/crypto/kraken_assets", "/crypto/kraken_assets", user, nil)
	check("POST", "/crypto/assets", "/crypto/assets", admin, map[string]string{"symbol": "BTC/USD"})
	check("POST", "/crypto/assets", "/crypto/assets", admin, map[string]string{"symbol": "DOGE/EUR"})
	check("GET", "/crypto/assets", "/crypto/assets", user, nil)
	check("GET", "/crypto/asset_history/{asset}", "/crypto/asset_history/BTC-USD?limit=2", user, nil)
	check("GET", "/crypto/asset_history/{asset}", "/crypto/asset_history/BTC-USD?limit=2&interval=bad", user, nil)
	check("GET", "/crypto/asset_latest/{asset}", "/crypto/asset_latest/BTC-USD", user, nil)
	check("GET", "/crypto/asset_latest/{asset}", "/crypto/asset_latest/ETH-USD", user, nil)
	check("GET", "/crypto/alert_history/{asset}", "/crypto/alert_history/BTC-USD", user, nil)
	check("GET", "/crypto/alert_history/{asset}", "/crypto/alert_history/BTC-USD?limit=0", user, nil)
	check("DELETE", "/crypto/assets/{id}", "/crypto/assets/BTC-USD", admin, nil)
	check("DELETE", "/crypto/assets/{id}", "/crypto/assets/BTC-USD", admin, nil)
	check("GET", "/prediction/latest-prediction", "/prediction/latest-prediction", user, nil)
	check("GET", "/prediction/history", "/prediction/history?from=1677646000&to=1677647000", user, nil)
	check("GET", "/prediction/history", "/prediction/history?from=1677646000&to=1677647000&horizons=all&limit=1", user, nil)
	check("GET", "/prediction/history", "/prediction/history?from=1677646000", user, nil)
	check("GET", "/prediction/history", "/prediction/history?asset=XRP-USD&from=1677646000&to=1677647000", user, nil)
	check("GET", "/prediction/model-evaluation", "/prediction/model-evaluation?asset=BTC-USD", user, nil)
	check("GET", "/prediction/best-model", "/prediction/best-model", user, nil)
	check("GET", "/prediction/best-model", "/prediction/best-model?asset=ETH-USD", user, nil)
	check("GET", "/prediction/models", "/prediction/models", user, nil)
	var jobID string
	for _, kind := range []string{"train", "score", "predict"} {
		r := check("POST", "/prediction/"+kind, "/prediction/"+kind, admin, map[string]string{"asset": "BTC-USD"})
		jobID = r.json(t)["job_id"].(string)
	}
	check("POST", "/prediction/train", "/prediction/train", user, map[string]string{"asset": "BTC-USD"})
	check("GET", "/prediction/jobs/{id}", "/prediction/jobs/"+jobID, user, nil)
	check("POST", "/crypto/assets", "/crypto/assets", admin, map[string]string{"symbol": "BTC/USD"})
	rule := map[string]any{"kind": "percent_move", "symbol": "BTC/USD", "threshold": 0.01, "window": "2m",
		"webhook": map[string]any{"url": "https://93.184.215.14/hook", "secret": "s"}}
	ruleID := check("POST", "/alerts/rules", "/alerts/rules", user, rule).json(t)["id"].(string)
	check("POST", "/alerts/rules", "/alerts/rules", user, map[string]any{"kind": "moon"})
	check("GET", "/alerts/rules", "/alerts/rules", user, nil)
	check("GET", "/alerts/rules/{id}", "/alerts/rules/"+ruleID, user, nil)
	check("GET", "/alerts/rules/{id}", "/alerts/rules/nope", user, nil)
	check("PUT", "/alerts/rules/{id}", "/alerts/rules/"+ruleID, user, rule)
	check("POST", "/alerts/rules/preview", "/alerts/rules/preview", user, map[string]any{"rule_id": ruleID, "from": "1677646800", "to": "1677647100"})
	check("POST", "/alerts/rules/preview", "/alerts/rules/preview", user, map[string]any{"rule_id": ruleID})
	publish(t, s, &streams.Alert{ID: "a1", RuleID: ruleID, Owner: s.accountID("bob"), Symbol: "BTC/USD", Interval: streams.Interval1m, Kind: "percent_move",
		Message: "BTC/USD rose", Value: 1, Threshold: 1, Values: map[string]float64{"from": 1}, At: time.Unix(1677646860, 0), Stream: streams.StreamMarket, Seq: 2})
	check("GET", "/alerts/history", "/alerts/history", user, nil)
	check("GET", "/alerts/history", "/alerts/history?limit=0", user, nil)
	check("DELETE", "/alerts/rules/{id}", "/alerts/rules/"+ruleID, user, nil)
	check("DELETE", "/alerts/rules/{id}", "/alerts/rules/"+ruleID, user, nil)
	check("GET", "/openapi.json", "/openapi.json", "", nil)
	startBacktestWorker(t, s)
	bt := map[string]any{"asset": "BTC/USD", "from": "2023-03-01T05:00:00Z", "to": "2023-03-01T05:04:00Z"}
	btID := check("POST", "/backtests", "/backtests", admin, bt).json(t)["id"].(string)
	check("POST", "/backtests", "/backtests", user, bt)
	check("POST", "/backtests", "/backtests", admin, map[string]any{"from": "yesterday"})
	waitBacktest(t, s, admin, btID)
	check("GET", "/backtests/{id}", "/backtests/"+btID, admin, nil)
	check("GET", "/backtests/{id}", "/backtests/"+strings.Repeat("0", 32), admin, nil)
	check("GET", "/backtests", "/backtests", admin, nil)
	check("GET", "/backtests/{id}/report.html", "/backtests/"+btID+"/report.html", admin, nil)
	// Every secured operation documents the 401 it answers without a token.
	for tmpl, ops := range doc.Paths {
		for method, op := range ops {
			if len(op.Security) == 0 || tmpl == "/ws" {
				continue
			}
			path := strings.NewReplacer("{username}", "bob", "{id}", "BTC-USD", "{asset}", "BTC-USD").Replace(tmpl)
			if r := check(strings.ToUpper(method), tmpl, path, "", nil); r.status != http.StatusUnauthorized {
				t.Fatalf("%s %s without a token = %d", method, tmpl, r.status)
			}
		}
	}
	// The websocket upgrade.
	if _, resp, err := s.dialWS(user, false); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("ws = %v, %v", resp, err)
	}
	covered["GET /ws"] = true

	var missing []string
	for tmpl, ops := range doc.Paths {
		for method := range ops {
			if k := strings.ToUpper(method) + " " + tmpl; !covered[k] {
				missing = append(missing, k)
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("documented but never answered with success: %v", missing)
	}
}
