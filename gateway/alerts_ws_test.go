package gateway_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"cryptostream/streams"
)

// On the websocket, a user receives their own alerts and the system's and
// never another user's, live or from the stream (snapshot, resume); the
// admins' security alerts reach admins only.
func TestWebsocketAlertsReachTheirOwnerOnly(t *testing.T) {
	s := newStack(t)
	s.track("BTC/USD")
	tokens := map[string]string{"alice": s.signup("alice", "alice-password"), "bob": s.signup("bob", "bob-password"), "root": s.login(adminName, adminPass)}
	alert := func(i int, owner string) *streams.Alert {
		a := &streams.Alert{ID: fmt.Sprint("a", i), RuleID: "r", Owner: s.addressed(owner), Symbol: "BTC/USD", Interval: streams.Interval1m, Kind: "percent_move",
			Message: "m", Value: 1, Threshold: 1, At: tickStart}
		if owner == streams.AlertAudienceAdmins {
			a.Symbol, a.Interval, a.Key, a.Kind = "", 0, "eve", "failed_logins"
		}
		return a
	}
	// Stored before anyone connects: what a resume replays.
	var seqs []uint64
	for i, owner := range []string{"bob", "alice", "", streams.AlertAudienceAdmins, "bob"} {
		seqs = append(seqs, publish(t, s, alert(i, owner)))
	}
	conns := map[string]*wsClient{}
	for who, tok := range tokens {
		c, _, err := s.dialWS(tok, false)
		if err != nil {
			t.Fatal(err)
		}
		c.send(map[string]any{"op": "subscribe", "channel": "alerts", "since": seqs[0] - 1})
		c.expect("subscribed", "alerts")
		conns[who] = c
	}
	// Then live, ending with a system alert everyone gets, so each client
	// has read all it will get once it sees a9.
	for i, owner := range []string{"alice", "bob", streams.AlertAudienceAdmins, "root", ""} {
		publish(t, s, alert(5+i, owner))
	}
	want := map[string]string{
		"alice": "[a1 a2 a5 a9]",
		"bob":   "[a0 a2 a4 a6 a9]",
		"root":  "[a2 a3 a7 a8 a9]",
	}
	for who, c := range conns {
		var got []string
		for len(got) == 0 || got[len(got)-1] != "a9" {
			f := c.expect("event", "alerts")
			var a struct {
				ID string `json:"id"`
			}
			if err := json.Unmarshal(f.Data, &a); err != nil {
				t.Fatal(err)
			}
			got = append(got, a.ID)
		}
		if fmt.Sprint(got) != want[who] {
			t.Errorf("%s received %v, want %s", who, got, want[who])
		}
	}
	// The snapshot of a channel whose newest alert is someone else's is
	// empty, not that alert.
	publish(t, s, alert(10, "bob"))
	c, _, err := s.dialWS(tokens["alice"], false)
	if err != nil {
		t.Fatal(err)
	}
	c.send(map[string]any{"op": "subscribe", "channel": "alerts:BTC-USD"})
	c.expect("subscribed", "alerts:BTC-USD")
	publish(t, s, alert(11, ""))
	if f := c.expect("event", "alerts:BTC-USD"); f.Snapshot || !json.Valid(f.Data) || string(f.Data) == "" {
		t.Fatalf("first frame %+v", f)
	} else if a, _ := streams.Decode[streams.Alert](f.Data); a.ID != "a11" {
		t.Fatalf("alice got %s first", a.ID)
	}
}
