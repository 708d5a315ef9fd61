package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"cryptostream/datatest"
	"cryptostream/gateway"
	"cryptostream/notifier"
	"cryptostream/streams"
)

func moveRule(threshold float64) map[string]any {
	return map[string]any{"kind": "percent_move", "symbol": "BTC/USD", "threshold": threshold, "window": "15m", "cooldown": "30m", "hysteresis": 0.3}
}

func (s *stack) trackVia(admin, sym string) {
	s.t.Helper()
	s.expect(s.call("POST", "/crypto/assets", admin, map[string]string{"symbol": sym}), http.StatusCreated)
}

// accountID is the account ID of a user: what alerts are addressed to.
func (s *stack) accountID(name string) string {
	s.t.Helper()
	u, _, err := s.gw.Users().Get(s.t.Context(), name)
	if err != nil || u.ID == "" {
		s.t.Fatalf("account of %s: %+v %v", name, u, err)
	}
	return u.ID
}

// addressed maps user names to their account IDs, leaving the system's
// audiences as they are.
func (s *stack) addressed(owner string) string {
	if owner == "" || owner == streams.AlertAudienceAdmins {
		return owner
	}
	return s.accountID(owner)
}

func ruleIDs(t *testing.T, r reply) []string {
	t.Helper()
	var ids []string
	for _, x := range r.json(t)["rules"].([]any) {
		ids = append(ids, x.(map[string]any)["id"].(string))
	}
	return ids
}

func TestAlertRulesOwnership(t *testing.T) {
	s := newStack(t)
	admin := s.login(adminName, adminPass)
	alice := s.signup("alice", "alice-password")
	bob := s.signup("bob", "bob-password")
	s.trackVia(admin, "BTC/USD")

	r := s.expect(s.call("POST", "/alerts/rules", alice, moveRule(2)), http.StatusCreated)
	id := r.json(t)["id"].(string)
	if r.json(t)["owner"] != "alice" || r.header.Get("Location") != "/alerts/rules/"+id {
		t.Fatalf("created %s", r.body)
	}
	s.expect(s.call("POST", "/alerts/rules", bob, moveRule(3)), http.StatusCreated)

	if ids := ruleIDs(t, s.expect(s.call("GET", "/alerts/rules", alice, nil), http.StatusOK)); len(ids) != 1 || ids[0] != id {
		t.Fatalf("alice lists %v", ids)
	}
	if ids := ruleIDs(t, s.expect(s.call("GET", "/alerts/rules", bob, nil), http.StatusOK)); len(ids) != 1 || ids[0] == id {
		t.Fatalf("bob lists %v", ids)
	}
	if ids := ruleIDs(t, s.expect(s.call("GET", "/alerts/rules", admin, nil), http.StatusOK)); len(ids) != 2 {
		t.Fatalf("admin lists %v", ids)
	}
	if ids := ruleIDs(t, s.expect(s.call("GET", "/alerts/rules?owner=alice", admin, nil), http.StatusOK)); len(ids) != 1 || ids[0] != id {
		t.Fatalf("admin lists alice's as %v", ids)
	}

	// Bob cannot read, change, delete or preview alice's rule: to him it
	// does not exist.
	path := "/alerts/rules/" + id
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"GET", path, nil},
		{"PUT", path, moveRule(5)},
		{"DELETE", path, nil},
		{"POST", "/alerts/rules/preview", map[string]any{"rule_id": id, "from": "2023-03-02T22:00:00Z", "to": "2023-03-03T04:00:00Z"}},
	} {
		if r := s.call(c.method, c.path, bob, c.body); r.status != http.StatusNotFound || r.errCode(t) != "rule_not_found" {
			t.Errorf("bob %s %s = %d %s", c.method, c.path, r.status, r.body)
		}
	}
	if got := s.expect(s.call("GET", path, alice, nil), http.StatusOK).json(t); got["threshold"] != 2.0 {
		t.Fatalf("bob changed alice's rule: %v", got)
	}
	// Alice changes her own; the admin can too, and it stays hers.
	s.expect(s.call("PUT", path, alice, moveRule(2.5)), http.StatusOK)
	if got := s.expect(s.call("PUT", path, admin, moveRule(2.6)), http.StatusOK).json(t); got["owner"] != "alice" || got["threshold"] != 2.6 {
		t.Fatalf("admin edit: %v", got)
	}

	// Security and system rules are an admin's.
	sec := map[string]any{"kind": "failed_logins", "count": 20, "window": "1m", "per": "ip"}
	if r := s.call("POST", "/alerts/rules", bob, sec); r.status != http.StatusForbidden {
		t.Fatalf("bob's security rule = %d %s", r.status, r.body)
	}
	sys := moveRule(2)
	sys["system"] = true
	if r := s.call("POST", "/alerts/rules", bob, sys); r.status != http.StatusForbidden {
		t.Fatalf("bob's system rule = %d %s", r.status, r.body)
	}
	s.expect(s.call("POST", "/alerts/rules", admin, sec), http.StatusCreated)
	if got := s.expect(s.call("POST", "/alerts/rules", admin, sys), http.StatusCreated).json(t); got["system"] != true || got["owner"] != "" {
		t.Fatalf("system rule %v", got)
	}
	if ids := ruleIDs(t, s.expect(s.call("GET", "/alerts/rules", bob, nil), http.StatusOK)); len(ids) != 1 {
		t.Fatalf("bob sees %d rules", len(ids))
	}

	s.expect(s.call("DELETE", path, alice, nil), http.StatusNoContent)
	s.expect(s.call("GET", path, alice, nil), http.StatusNotFound)
}

func TestAlertRulesBadInput(t *testing.T) {
	s := newStack(t, func(c *gateway.Config, _ *gateway.Deps) { c.MaxAlertRules = 2 })
	admin := s.login(adminName, adminPass)
	alice := s.signup("alice", "alice-password")
	s.trackVia(admin, "BTC/USD")
	withHook := func(url string) map[string]any {
		r := moveRule(2)
		r["webhook"] = map[string]any{"url": url}
		return r
	}
	count := func() int {
		return len(s.expect(s.call("GET", "/alerts/rules", admin, nil), http.StatusOK).json(t)["rules"].([]any))
	}
	for _, tc := range []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"not JSON", `{"kind":`, 400, "malformed_body"},
		{"unknown field", `{"kind":"price_cross","symbol":"BTC/USD","threshold":1,"owner":"bob"}`, 400, "malformed_body"},
		{"NaN", `{"kind":"price_cross","symbol":"BTC/USD","threshold":NaN}`, 400, "malformed_body"},
		{"NaN as a string", `{"kind":"price_cross","symbol":"BTC/USD","threshold":"NaN"}`, 400, "malformed_body"},
		{"huge number", `{"kind":"price_cross","symbol":"BTC/USD","threshold":1e999}`, 400, "malformed_body"},
		{"no threshold", `{"kind":"price_cross","symbol":"BTC/USD"}`, 400, "invalid_threshold"},
		{"bad window", `{"kind":"percent_move","symbol":"BTC/USD","threshold":2,"window":"soon"}`, 400, "malformed_body"},
		{"unknown kind", map[string]any{"kind": "moon", "symbol": "BTC/USD", "threshold": 1}, 400, "unknown_kind"},
		{"unknown asset", map[string]any{"kind": "price_cross", "symbol": "ETH/USD", "threshold": 1}, 400, "unknown_asset"},
		{"not an asset", map[string]any{"kind": "price_cross", "symbol": "BTCUSD", "threshold": 1}, 400, "invalid_symbol"},
		{"threshold out of range", map[string]any{"kind": "percent_move", "symbol": "BTC/USD", "threshold": 250, "window": "15m"}, 400, "threshold_out_of_range"},
		{"negative level", map[string]any{"kind": "price_cross", "symbol": "BTC/USD", "threshold": -5}, 400, "threshold_out_of_range"},
		{"oversized", `{"name":"` + strings.Repeat("x", 70<<10) + `"}`, 413, "body_too_large"},
		{"webhook on loopback", withHook("http://127.0.0.1:8080/hook"), 400, "invalid_webhook"},
		{"webhook on cloud metadata", withHook("http://169.254.169.254/latest/meta-data/"), 400, "invalid_webhook"},
		{"webhook on a private network", withHook("https://10.1.2.3/hook"), 400, "invalid_webhook"},
		{"webhook on IPv6 loopback", withHook("http://[::1]/hook"), 400, "invalid_webhook"},
		{"webhook on IPv4-mapped loopback", withHook("http://[::ffff:127.0.0.1]/hook"), 400, "invalid_webhook"},
		{"webhook on localhost", withHook("http://localhost/hook"), 400, "invalid_webhook"},
		{"webhook not http", withHook("file:///etc/passwd"), 400, "invalid_webhook"},
		{"webhook with credentials", withHook("https://u:p@93.184.215.14/hook"), 400, "invalid_webhook"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.call("POST", "/alerts/rules", alice, tc.body)
			if r.status != tc.status || r.errCode(t) != tc.code {
				t.Fatalf("= %d %s, want %d %s", r.status, r.body, tc.status, tc.code)
			}
			if n := count(); n != 0 {
				t.Fatalf("%d rules stored after a refusal", n)
			}
		})
	}
	// The cap: the third rule is refused and not stored.
	s.expect(s.call("POST", "/alerts/rules", alice, moveRule(2)), http.StatusCreated)
	s.expect(s.call("POST", "/alerts/rules", alice, moveRule(3)), http.StatusCreated)
	if r := s.call("POST", "/alerts/rules", alice, moveRule(4)); r.status != 400 || r.errCode(t) != "too_many_rules" {
		t.Fatalf("third rule = %d %s", r.status, r.body)
	}
	if n := count(); n != 2 {
		t.Fatalf("%d rules stored", n)
	}
	// A bad replacement leaves the rule as it was.
	id := ruleIDs(t, s.expect(s.call("GET", "/alerts/rules", alice, nil), http.StatusOK))[0]
	before := s.expect(s.call("GET", "/alerts/rules/"+id, alice, nil), http.StatusOK).body
	s.expect(s.call("PUT", "/alerts/rules/"+id, alice, withHook("http://169.254.169.254/")), http.StatusBadRequest)
	if after := s.expect(s.call("GET", "/alerts/rules/"+id, alice, nil), http.StatusOK).body; string(after) != string(before) {
		t.Fatalf("rule changed by a refused PUT:\n%s\n%s", before, after)
	}
}

// The preview over the stored candles answers what the engine answers
// over the same file (notifier's TestPercentMoveOnRealData).
func TestAlertRulePreview(t *testing.T) {
	s := newStack(t)
	admin := s.login(adminName, adminPass)
	alice := s.signup("alice", "alice-password")
	s.trackVia(admin, "BTC/USD")
	var cs []streams.Candle
	from, to := time.Date(2023, 3, 2, 22, 0, 0, 0, time.UTC), time.Date(2023, 3, 3, 4, 0, 0, 0, time.UTC)
	for _, c := range datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 3000) {
		if !c.Start.Before(from) && c.Start.Before(to) {
			cs = append(cs, c)
		}
	}
	publishCandles(t, s, cs)
	body := map[string]any{"rule": moveRule(0.7), "from": from.Format(time.RFC3339), "to": to.Format(time.RFC3339)}
	got := s.expect(s.call("POST", "/alerts/rules/preview", alice, body), http.StatusOK).json(t)
	firings := got["firings"].([]any)
	var at []string
	for _, f := range firings {
		m := f.(map[string]any)
		at = append(at, fmt.Sprint(m["at"], " ", m["values"].(map[string]any)["to"]))
	}
	if want := "[2023-03-03T01:21:00Z 23170.8 2023-03-03T01:58:00Z 22128.7]"; fmt.Sprint(at) != want || got["candles"] != float64(len(cs)) {
		t.Fatalf("preview fired %v over %v candles, want %s", at, got["candles"], want)
	}
	// Nothing was stored.
	if n := len(s.expect(s.call("GET", "/alerts/rules", alice, nil), http.StatusOK).json(t)["rules"].([]any)); n != 0 {
		t.Fatalf("preview stored %d rules", n)
	}
	// A stored rule previews by id.
	id := s.expect(s.call("POST", "/alerts/rules", alice, moveRule(2)), http.StatusCreated).json(t)["id"].(string)
	byID := s.expect(s.call("POST", "/alerts/rules/preview", alice, map[string]any{"rule_id": id, "from": body["from"], "to": body["to"]}), http.StatusOK).json(t)
	if f := byID["firings"].([]any); len(f) != 1 || !strings.HasPrefix(f[0].(map[string]any)["message"].(string), "BTC/USD fell 2.3% in 15 min") {
		t.Fatalf("preview by id: %v", byID)
	}
	for _, bad := range []map[string]any{
		{"rule": moveRule(2), "from": body["from"]},
		{"rule": moveRule(2), "from": body["to"], "to": body["from"]},
		{"rule": moveRule(2), "from": "2023-01-01T00:00:00Z", "to": "2023-06-01T00:00:00Z"},
		{"from": body["from"], "to": body["to"]},
	} {
		if r := s.call("POST", "/alerts/rules/preview", alice, bad); r.status != http.StatusBadRequest {
			t.Errorf("preview %v = %d %s", bad, r.status, r.body)
		}
	}
}

func TestAlertsHistory(t *testing.T) {
	s := newStack(t)
	admin := s.login(adminName, adminPass)
	alice := s.signup("alice", "alice-password")
	bob := s.signup("bob", "bob-password")
	at := time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)
	for i, owner := range []string{"alice", "bob", "", streams.AlertAudienceAdmins, "alice", "bob", "alice"} {
		a := streams.Alert{ID: fmt.Sprint("a", i), RuleID: "r", Owner: s.addressed(owner), Symbol: "BTC/USD", Interval: streams.Interval1m, Kind: "percent_move",
			Message: "m", Value: 1, Threshold: 1, At: at.Add(time.Duration(i) * time.Minute)}
		if owner == streams.AlertAudienceAdmins {
			a.Symbol, a.Interval, a.Key, a.Kind = "", 0, "eve", "failed_logins"
		}
		publish(t, s, &a)
	}
	ids := func(r reply) []string {
		var out []string
		for _, x := range r.json(t)["alerts"].([]any) {
			out = append(out, x.(map[string]any)["id"].(string))
		}
		return out
	}
	for _, tc := range []struct {
		who, token, query, want string
	}{
		{"alice", alice, "", "[a0 a2 a4 a6]"},
		{"bob", bob, "", "[a1 a2 a5]"},
		{"admin", admin, "", "[a2 a3]"},
		{"admin for alice", admin, "?user=alice", "[a0 a4 a6]"},
		{"alice by symbol", alice, "?symbol=BTC-USD", "[a0 a2 a4 a6]"},
	} {
		if got := fmt.Sprint(ids(s.expect(s.call("GET", "/alerts/history"+tc.query, tc.token, nil), http.StatusOK))); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.who, got, tc.want)
		}
	}
	if r := s.call("GET", "/alerts/history?user=alice", bob, nil); r.status != http.StatusForbidden {
		t.Fatalf("bob reading alice's = %d", r.status)
	}
	// Pages by stream sequence.
	var pages []string
	q := "?limit=2"
	for range 5 {
		r := s.expect(s.call("GET", "/alerts/history"+q, alice, nil), http.StatusOK)
		pages = append(pages, fmt.Sprint(ids(r)))
		next, ok := r.json(t)["next"].(float64)
		if !ok {
			break
		}
		q = fmt.Sprintf("?limit=2&after=%d", int(next))
	}
	if got := fmt.Sprint(pages); got != "[[a0 a2] [a4 a6] []]" && got != "[[a0 a2] [a4 a6]]" {
		t.Fatalf("pages %s", got)
	}
	for _, q := range []string{"?limit=0", "?limit=5000", "?after=x", "?symbol=nope"} {
		if r := s.call("GET", "/alerts/history"+q, alice, nil); r.status != http.StatusBadRequest {
			t.Errorf("%s = %d", q, r.status)
		}
	}
}

// Rules and alerts are addressed to the account, not the name: a user
// deleted and a newcomer signed up under the same name inherits none of
// their rules or alerts, on the REST routes or the websocket. The deleted
// user's rules go with the account; rules stored when they were keyed by
// name are adopted by their account at the gateway's start, or deleted when
// the account is gone.
func TestRulesDoNotPassToANewAccountOfTheSameName(t *testing.T) {
	s := newStack(t)
	admin := s.login(adminName, adminPass)
	s.trackVia(admin, "BTC/USD")
	old := s.signup("alice", "alice-password")
	oldID := s.accountID("alice")
	kept := s.expect(s.call("POST", "/alerts/rules", old, moveRule(2)), http.StatusCreated).json(t)["id"].(string)

	s.expect(s.call("DELETE", "/auth/users/alice", admin, nil), http.StatusNoContent)
	rules, err := s.js.KeyValue(t.Context(), streams.BucketAlertRules)
	if err != nil {
		t.Fatal(err)
	}
	store := notifier.NewStore(rules, 0, nil)
	if _, _, err := store.Get(t.Context(), kept); !errors.Is(err, notifier.ErrRuleNotFound) {
		t.Fatalf("the deleted user's rule: %v", err)
	}
	// A rule the deletion missed (as if a gateway crashed midway through
	// it) stays addressed to the old account.
	left, err := store.Create(t.Context(), notifier.Rule{Owner: "alice", OwnerID: oldID, Kind: notifier.KindPriceCross, Symbol: "BTC/USD",
		Interval: streams.Interval1m, Threshold: 1, Trigger: notifier.TriggerOncePerClose})
	if err != nil {
		t.Fatal(err)
	}

	newcomer := s.signup("alice", "another-password")
	if s.accountID("alice") == oldID {
		t.Fatal("the new account has the old one's id")
	}
	if ids := ruleIDs(t, s.expect(s.call("GET", "/alerts/rules", newcomer, nil), http.StatusOK)); len(ids) != 0 {
		t.Fatalf("the newcomer lists %v", ids)
	}
	for _, c := range []struct {
		method string
		body   any
	}{{"GET", nil}, {"PUT", moveRule(3)}, {"DELETE", nil}} {
		if r := s.call(c.method, "/alerts/rules/"+left.ID, newcomer, c.body); r.status != http.StatusNotFound {
			t.Errorf("newcomer %s = %d %s", c.method, r.status, r.body)
		}
	}
	if ids := ruleIDs(t, s.expect(s.call("GET", "/alerts/rules?owner=alice", admin, nil), http.StatusOK)); len(ids) != 0 {
		t.Fatalf("the admin lists the newcomer's rules as %v", ids)
	}

	c, _, err := s.dialWS(newcomer, false)
	if err != nil {
		t.Fatal(err)
	}
	c.send(map[string]any{"op": "subscribe", "channel": "alerts"})
	c.expect("subscribed", "alerts")
	at := time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)
	for i, owner := range []string{oldID, ""} {
		publish(t, s, &streams.Alert{ID: fmt.Sprint("a", i), RuleID: left.ID, Owner: owner, Symbol: "BTC/USD", Interval: streams.Interval1m,
			Kind: "price_cross", Message: "m", Value: 1, Threshold: 1, At: at.Add(time.Duration(i) * time.Minute)})
	}
	if a, _ := streams.Decode[streams.Alert](c.expect("event", "alerts").Data); a.ID != "a1" {
		t.Fatalf("the newcomer received %s, the old account's alert", a.ID)
	}
	hist := s.expect(s.call("GET", "/alerts/history", newcomer, nil), http.StatusOK).json(t)["alerts"].([]any)
	if len(hist) != 1 || hist[0].(map[string]any)["id"] != "a1" {
		t.Fatalf("the newcomer's history %v", hist)
	}

	// Rules from before they named accounts: bob's is adopted by bob's
	// account, carol's (no account) and the old alice's (the account
	// under the name is younger than the rule) are deleted.
	s.signup("bob", "bob-password")
	// The old alice's from before the newcomer signed up.
	before := notifier.NewStore(rules, 0, func() time.Time { return time.Now().Add(-time.Hour) })
	legacy := map[string]string{}
	for _, name := range []string{"bob", "carol", "alice"} {
		st := store
		if name == "alice" {
			st = before
		}
		r, err := st.Create(t.Context(), notifier.Rule{Owner: name, Kind: notifier.KindPriceCross, Symbol: "BTC/USD",
			Interval: streams.Interval1m, Threshold: 1, Trigger: notifier.TriggerOncePerClose})
		if err != nil {
			t.Fatal(err)
		}
		legacy[name] = r.ID
	}
	if err := s.gw.EnsureAdmin(t.Context(), adminName, adminPass); err != nil {
		t.Fatal(err)
	}
	if got, _, err := store.Get(t.Context(), legacy["bob"]); err != nil || got.OwnerID != s.accountID("bob") {
		t.Fatalf("bob's old rule %+v %v", got, err)
	}
	for _, name := range []string{"carol", "alice"} {
		if _, _, err := store.Get(t.Context(), legacy[name]); !errors.Is(err, notifier.ErrRuleNotFound) {
			t.Errorf("%s's old rule: %v", name, err)
		}
	}
	if ids := ruleIDs(t, s.expect(s.call("GET", "/alerts/rules", newcomer, nil), http.StatusOK)); len(ids) != 0 {
		t.Fatalf("after adoption the newcomer lists %v", ids)
	}
}

// notifierOn runs a notifier worker over the stack's bus until the test
// ends.
func (s *stack) notifierOn(t testing.TB) {
	t.Helper()
	rules, err := s.js.KeyValue(t.Context(), streams.BucketAlertRules)
	if err != nil {
		t.Fatal(err)
	}
	assets, err := s.js.KeyValue(t.Context(), streams.BucketAssets)
	if err != nil {
		t.Fatal(err)
	}
	w, err := notifier.New(notifier.Config{}, notifier.Deps{JS: s.js, Rules: rules, Assets: assets})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

// handled waits until a durable consumer has acked all its stream holds.
func (s *stack) handled(t *testing.T, stream, consumer string) {
	t.Helper()
	st, err := s.js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for {
		c, err := s.js.Consumer(t.Context(), stream, consumer)
		if err != nil {
			t.Fatal(err)
		}
		ci, err := c.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if ci.AckFloor.Stream >= info.State.LastSeq {
			return
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("%s stuck at %d of %d", consumer, ci.AckFloor.Stream, info.State.LastSeq)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Every kind previews, and its preview answers exactly what the notifier
// worker fired over the same stored events: candles and predictions of a
// real stretch for the market and prediction kinds, the audit events of
// real failed logins, a role change and a deletion for the security kinds.
func TestAlertRulePreviewEveryKind(t *testing.T) {
	s := newStack(t)
	began := time.Now().UTC()
	admin := s.login(adminName, adminPass)
	alice := s.signup("alice", "alice-password")
	s.signup("bob", "bob-password")
	s.signup("carol", "carol-password")
	s.trackVia(admin, "BTC/USD")
	from, to := time.Date(2023, 3, 2, 22, 0, 0, 0, time.UTC), time.Date(2023, 3, 3, 4, 0, 0, 0, time.UTC)
	var cs []streams.Candle
	for _, c := range datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 3000) {
		if !c.Start.Before(from) && c.Start.Before(to) {
			cs = append(cs, c)
		}
	}
	publishCandles(t, s, cs)
	ps := datatest.ReversalPredictions(cs)
	datatest.Failing(ps, [2]time.Time{from.Add(time.Hour), from.Add(2 * time.Hour)}, [2]time.Time{from.Add(200 * time.Minute), from.Add(230 * time.Minute)})
	for i := range ps {
		publish(t, s, &ps[i])
	}
	market := []map[string]any{
		{"kind": "price_cross", "symbol": "BTC/USD", "threshold": 23000, "hysteresis": 0.002},
		moveRule(0.7),
		{"kind": "volatility_spike", "symbol": "BTC/USD", "threshold": 2, "window": "10m", "count": 6, "cooldown": "30m"},
		{"kind": "predicted_move", "symbol": "BTC/USD", "threshold": 0.3, "hysteresis": 0.2},
		{"kind": "model_error", "symbol": "BTC/USD", "threshold": 0, "count": 10, "hysteresis": 0.1, "cooldown": "20m"},
		{"kind": "forecast_failing", "symbol": "BTC/USD", "horizon": "15m"},
	}
	security := []map[string]any{
		{"kind": "failed_logins", "count": 20, "window": "1m", "per": "username"},
		{"kind": "role_granted"},
		{"kind": "user_deleted"},
	}
	ids := map[string]string{}
	for _, body := range market {
		ids[body["kind"].(string)] = s.expect(s.call("POST", "/alerts/rules", alice, body), http.StatusCreated).json(t)["id"].(string)
	}
	for _, body := range security {
		ids[body["kind"].(string)] = s.expect(s.call("POST", "/alerts/rules", admin, body), http.StatusCreated).json(t)["id"].(string)
	}
	// The case: 20 failed logins in a minute (and one more, which
	// must not fire again).
	for range 21 {
		s.expect(s.call("POST", "/auth/login", "", map[string]string{"username": "bob", "password": "wrong-password"}), http.StatusUnauthorized)
	}
	s.expect(s.call("PUT", "/auth/users/bob/role", admin, map[string]string{"role": "admin"}), http.StatusOK)
	s.expect(s.call("DELETE", "/auth/users/carol", admin, nil), http.StatusNoContent)
	ended := time.Now().UTC().Add(time.Minute)

	s.notifierOn(t)
	s.handled(t, streams.StreamMarket, streams.ConsumerNotifierMarket)
	s.handled(t, streams.StreamPredictions, streams.ConsumerNotifierPrediction)
	s.handled(t, streams.StreamAudit, streams.ConsumerNotifierAudit)
	live := map[string][]string{}
	for _, tok := range []string{alice, admin} {
		for _, x := range s.expect(s.call("GET", "/alerts/history?limit=1000", tok, nil), http.StatusOK).json(t)["alerts"].([]any) {
			a := x.(map[string]any)
			live[a["rule_id"].(string)] = append(live[a["rule_id"].(string)], fmt.Sprint(a["id"], " ", a["value"], " ", a["message"]))
		}
	}
	for kind, id := range ids {
		tok, lo, hi := alice, from, to
		if notifier.Kind(kind).Security() {
			tok, lo, hi = admin, began.Add(-time.Minute), ended
		}
		got := s.expect(s.call("POST", "/alerts/rules/preview", tok, map[string]any{"rule_id": id, "from": lo.Format(time.RFC3339), "to": hi.Format(time.RFC3339)}), http.StatusOK).json(t)
		var pre []string
		for _, x := range got["firings"].([]any) {
			a := x.(map[string]any)
			pre = append(pre, fmt.Sprint(a["id"], " ", a["value"], " ", a["message"]))
		}
		if len(pre) == 0 || fmt.Sprint(pre) != fmt.Sprint(live[id]) || (kind == "failed_logins" && len(pre) != 1) {
			t.Errorf("%s: preview %q\nlive    %q", kind, pre, live[id])
		}
	}
	// A user cannot preview a security rule, nor an admin's by id.
	if r := s.call("POST", "/alerts/rules/preview", alice, map[string]any{"rule": security[0], "from": began.Format(time.RFC3339), "to": ended.Format(time.RFC3339)}); r.status != http.StatusForbidden {
		t.Errorf("alice previews a security rule: %d %s", r.status, r.body)
	}
	if r := s.call("POST", "/alerts/rules/preview", alice, map[string]any{"rule_id": ids["failed_logins"], "from": began.Format(time.RFC3339), "to": ended.Format(time.RFC3339)}); r.status != http.StatusNotFound {
		t.Errorf("alice previews the admin's rule: %d %s", r.status, r.body)
	}
}
