package gateway_test

import (
	"net/http"
	"testing"
	"time"

	"cryptostream/natstest"
	"cryptostream/streams"
)

// TestRulesShowWhenTheyLastFired: every rule, whatever its trigger mode,
// is served with the trigger time of its newest alert in ALERTS, by a
// gateway that was running when the alerts came and by one started after
// them; a rule that never fired has none, and a once-rule's fired_at
// (the mark of a spent rule) is still its own.
func TestRulesShowWhenTheyLastFired(t *testing.T) {
	s := newStack(t)
	admin := s.login(adminName, adminPass)
	alice := s.signup("alice", "alice-password")
	s.trackVia(admin, "BTC/USD")
	create := func(body map[string]any) string {
		return s.expect(s.call("POST", "/alerts/rules", alice, body), http.StatusCreated).json(t)["id"].(string)
	}
	closes := create(moveRule(2))
	quiet := create(moveRule(3))
	once := moveRule(4)
	once["trigger"] = "once"
	onceID := create(once)

	at := time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)
	fire := func(id, rule string, at time.Time) {
		publish(t, s, &streams.Alert{ID: id, RuleID: rule, Owner: s.accountID("alice"), Symbol: "BTC/USD", Interval: streams.Interval1m,
			Kind: "percent_move", Message: "m", Value: 2.5, Threshold: 2, At: at})
	}
	fire("a0", closes, at)
	fire("a1", closes, at.Add(15*time.Minute))
	// An alert of another rule, and an older one of the same rule stored
	// later (a redelivered firing): neither moves it.
	fire("a2", onceID, at.Add(5*time.Minute))
	fire("a3", closes, at.Add(10*time.Minute))

	want := map[string]string{closes: at.Add(15 * time.Minute).Format(time.RFC3339), onceID: at.Add(5 * time.Minute).Format(time.RFC3339), quiet: ""}
	for _, g := range []*stack{s, newStackOn(t, s.js)} {
		tok := g.login("alice", "alice-password")
		natstest.WaitFor(t, time.Minute, "the index to read ALERTS", g.gw.AlertsIndexed)
		// Indexed up to the stream's end at the start; the live ones
		// follow: wait for the newest.
		natstest.WaitFor(t, time.Minute, "the newest firing indexed", func() bool {
			r := g.expect(g.call("GET", "/alerts/rules/"+closes, tok, nil), http.StatusOK)
			return r.json(t)["last_fired_at"] == want[closes]
		})
		rules := g.expect(g.call("GET", "/alerts/rules", tok, nil), http.StatusOK).json(t)["rules"].([]any)
		if len(rules) != 3 {
			t.Fatalf("rules %v", rules)
		}
		for _, x := range rules {
			r := x.(map[string]any)
			id := r["id"].(string)
			got, _ := r["last_fired_at"].(string)
			if got != want[id] {
				t.Errorf("rule %s: last_fired_at %q, want %q", r["name"], got, want[id])
			}
			if _, ok := r["fired_at"]; ok {
				// Nothing here ran the notifier that marks a spent once-rule.
				t.Errorf("rule %s: fired_at %v", r["name"], r["fired_at"])
			}
		}
	}
}
