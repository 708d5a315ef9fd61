package streams

import (
	"maps"
	"slices"
	"testing"
	"time"
)

// TestRenewMsgIsNewMsg: a message filled again with an event is the
// message NewMsg makes of it, whatever the message held before (another
// kind of event, a binary one, headers of its own, a reply), and a
// failed renewal leaves the message as it was.
func TestRenewMsgIsNewMsg(t *testing.T) {
	c, v, p := hopEvents()
	alert := Alert{ID: "r1:BTC-USD:1764687840", RuleID: "r1", Kind: "percent_move", Symbol: "BTC/USD",
		Interval: Interval1m, At: time.Date(2026, 12, 2, 15, 4, 0, 0, time.UTC), Message: "BTC/USD moved"}
	events := []Event{&c, &v, &p, &alert}
	for _, before := range events {
		for _, e := range events {
			m, err := NewMsg(before)
			if err != nil {
				t.Fatalf("%T: %v", before, err)
			}
			m.Header.Set("X-Other", "stale")
			m.Reply = "stale.reply"
			if err := RenewMsg(m, e); err != nil {
				t.Fatalf("%T over %T: %v", e, before, err)
			}
			want, err := NewMsg(e)
			if err != nil {
				t.Fatalf("%T: %v", e, err)
			}
			if m.Subject != want.Subject || m.Reply != "" || string(m.Data) != string(want.Data) ||
				!maps.EqualFunc(m.Header, want.Header, slices.Equal) {
				t.Fatalf("%T over %T:\ngot  %s %v %q\nwant %s %v %q", e, before, m.Subject, m.Header, m.Data, want.Subject, want.Header, want.Data)
			}
		}
	}
	m, _ := NewMsg(&p)
	was := string(m.Data)
	bad := p
	bad.Symbol = ""
	if err := RenewMsg(m, &bad); err == nil || string(m.Data) != was || m.Subject != p.Subject() {
		t.Fatalf("an invalid event: err %v, message %s %q", err, m.Subject, m.Data)
	}
}

// TestRenewMsgReusesTheMessage: renewing a landed output costs only the
// subject's and the id's strings, where NewMsg makes the message, its
// header and a data buffer of 2 KB for a prediction besides.
func TestRenewMsgReusesTheMessage(t *testing.T) {
	_, v, p := hopEvents()
	for _, e := range []Event{&v, &p} {
		m, err := NewMsg(e)
		if err != nil {
			t.Fatal(err)
		}
		renew := testing.AllocsPerRun(100, func() {
			if err := RenewMsg(m, e); err != nil {
				t.Fatal(err)
			}
		})
		fresh := testing.AllocsPerRun(100, func() {
			if _, err := NewMsg(e); err != nil {
				t.Fatal(err)
			}
		})
		if renew > 2 || renew >= fresh {
			t.Fatalf("%T: %.0f allocations to renew, %.0f to make anew", e, renew, fresh)
		}
		t.Logf("%T: %.0f allocations to renew, %.0f to make anew", e, renew, fresh)
	}
}
