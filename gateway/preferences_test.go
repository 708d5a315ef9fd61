package gateway_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"cryptostream/gateway"
	"cryptostream/natstest"
	"cryptostream/streams"
)

func watchlistOf(t *testing.T, r reply) []string {
	t.Helper()
	raw, _ := r.json(t)["watchlist"].([]any)
	out := []string{}
	for _, v := range raw {
		out = append(out, v.(string))
	}
	return out
}

// Preferences are per user, persist on the server, keep the order given,
// name only tracked assets, and die with their user.
func TestPreferences(t *testing.T) {
	s := newStack(t, func(c *gateway.Config, _ *gateway.Deps) {
		c.Hub.Intervals = []streams.Interval{streams.Interval15m, streams.Interval1m, streams.Interval5m}
	})
	admin := s.login(adminName, adminPass)
	s.expect(s.call("POST", "/crypto/assets", admin, map[string]string{"symbol": "BTC/USD"}), http.StatusCreated)
	// The intervals the system runs come with the assets, for the
	// dashboard's menus.
	if ivs := s.expect(s.call("GET", "/crypto/assets", admin, nil), http.StatusOK).json(t)["intervals"]; fmt.Sprint(ivs) != "[1m 5m 15m]" {
		t.Fatalf("intervals = %v, want [1m 5m 15m]", ivs)
	}
	// The recorded AssetPairs lists BTC/USD alone: a second tracked asset
	// goes straight into the bucket.
	kv, err := s.js.KeyValue(t.Context(), streams.BucketAssets)
	if err != nil {
		t.Fatal(err)
	}
	eth, _ := json.Marshal(streams.Asset{Schema: streams.Schema{V: streams.SchemaVersion}, Symbol: "ETH/USD", AddedBy: "test", AddedAt: time.Now()})
	if _, err := kv.Put(t.Context(), streams.AssetKey("ETH/USD"), eth); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, time.Minute, "the gateway's watch to have ETH/USD", func() bool { return s.gw.Tracks("ETH/USD") })
	bob := s.signup("bob", "bob-password")
	carol := s.signup("carol", "carol-password")

	r := s.expect(s.call("GET", "/auth/users/me/preferences", bob, nil), http.StatusOK)
	if got := watchlistOf(t, r); len(got) != 0 || r.json(t)["interval"] != "1m" || r.json(t)["updated_at"] != nil {
		t.Fatalf("defaults = %s", r.body)
	}
	s.expect(s.call("PUT", "/auth/users/me/preferences", bob, map[string]any{"watchlist": []string{"ETH-USD", "BTC/USD"}, "interval": "5m"}), http.StatusOK)
	// A partial update keeps the other field.
	s.expect(s.call("PUT", "/auth/users/me/preferences", bob, map[string]any{"interval": "15m"}), http.StatusOK)
	r = s.expect(s.call("GET", "/auth/users/me/preferences", bob, nil), http.StatusOK)
	if got := watchlistOf(t, r); !slices.Equal(got, []string{"ETH/USD", "BTC/USD"}) || r.json(t)["interval"] != "15m" {
		t.Fatalf("bob's preferences = %s", r.body)
	}
	// Carol does not see Bob's.
	if got := watchlistOf(t, s.expect(s.call("GET", "/auth/users/me/preferences", carol, nil), http.StatusOK)); len(got) != 0 {
		t.Fatalf("carol sees %v", got)
	}

	tooMany := make([]string, 13)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf("A%d/USD", i)
	}
	for name, body := range map[string]any{
		"untracked":  map[string]any{"watchlist": []string{"XRP/USD"}},
		"twice":      map[string]any{"watchlist": []string{"BTC/USD", "BTC-USD"}},
		"bad symbol": map[string]any{"watchlist": []string{"bitcoin"}},
		"too many":   map[string]any{"watchlist": tooMany},
		"interval":   map[string]any{"interval": "2m"},
		"not run":    map[string]any{"interval": "1h"},
		"unknown":    map[string]any{"theme": "dark"},
		"not json":   "{",
	} {
		r := s.call("PUT", "/auth/users/me/preferences", bob, body)
		if r.status != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400; body %s", name, r.status, r.body)
		}
		r.errCode(t)
	}
	// Nothing of the refused bodies was stored.
	if got := watchlistOf(t, s.expect(s.call("GET", "/auth/users/me/preferences", bob, nil), http.StatusOK)); !slices.Equal(got, []string{"ETH/USD", "BTC/USD"}) {
		t.Fatalf("after refusals bob has %v", got)
	}
	for _, m := range []string{"GET", "PUT"} {
		s.expect(s.call(m, "/auth/users/me/preferences", "", nil), http.StatusUnauthorized)
	}

	// A new user of a deleted user's name starts from the defaults.
	s.expect(s.call("DELETE", "/auth/users/bob", admin, nil), http.StatusNoContent)
	bob = s.signup("bob", "bob-password-2")
	if got := watchlistOf(t, s.expect(s.call("GET", "/auth/users/me/preferences", bob, nil), http.StatusOK)); len(got) != 0 {
		t.Fatalf("the new bob inherited %v", got)
	}
}
