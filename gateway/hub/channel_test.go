package hub

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseChannel(t *testing.T) {
	for _, c := range []struct{ in, name, stream, filter string }{
		{"ticks:BTC-USD", "ticks:BTC-USD", "TICKS", "market.tick.1m.BTC-USD"},
		{"ticks:btc/usd:1m", "ticks:BTC-USD", "TICKS", "market.tick.1m.BTC-USD"},
		{"ticks:XBT-USD:5m", "ticks:BTC-USD:5m", "TICKS", "market.tick.5m.BTC-USD"},
		{"candles:BTC-USD", "candles:BTC-USD:1m", "MARKET", "market.candle.1m.BTC-USD"},
		{"candles:ETH-EUR:1h", "candles:ETH-EUR:1h", "MARKET", "market.candle.1h.ETH-EUR"},
		{"predictions:BTC-USD", "predictions:BTC-USD", "PREDICTIONS", "predictions.1m.BTC-USD"},
		{"alerts", "alerts", "ALERTS", "alerts.*"},
		{"alerts:BTC/USD", "alerts:BTC-USD", "ALERTS", "alerts.BTC-USD"},
	} {
		sp, err := parseChannel(c.in)
		if err != nil || sp.name != c.name || sp.stream != c.stream || sp.filter != c.filter {
			t.Errorf("parseChannel(%q) = %+v, %v", c.in, sp, err)
		}
	}
	for _, bad := range []string{"", "ticks", "ticks:", "ticks:*", "ticks:>", "ticks:BTC-USD:7m", "ticks:BTC-USD:1m:x",
		"trades:BTC-USD", "alerts:*", "alerts:BTC-USD:1m", "candles:BTC.USD", strings.Repeat("a", 100)} {
		if sp, err := parseChannel(bad); err == nil {
			t.Errorf("parseChannel(%q) = %+v", bad, sp)
		}
	}
}

// FuzzParseChannel: whatever a client sends, an accepted channel never
// carries a wildcard or an extra token into its subject filter (except the
// one alerts.* the hub itself chooses).
func FuzzParseChannel(f *testing.F) {
	for _, s := range []string{"ticks:BTC-USD", "alerts", "candles:BTC/USD:1h", "ticks:*", "alerts:>", "predictions:a-b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sp, err := parseChannel(s)
		if err != nil {
			return
		}
		if sp.name == "alerts" {
			return
		}
		if strings.ContainsAny(sp.filter, "*> ") || strings.Count(sp.filter, ".") > 3 {
			t.Fatalf("%q gave filter %q", s, sp.filter)
		}
		again, err := parseChannel(sp.name)
		if err != nil || again != sp {
			t.Fatalf("canonical name %q does not parse back: %+v %v", sp.name, again, err)
		}
	})
}

func TestFrame(t *testing.T) {
	var f struct {
		Type     string          `json:"type"`
		Channel  string          `json:"channel"`
		Seq      uint64          `json:"seq"`
		Snapshot bool            `json:"snapshot"`
		Data     json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(appendEvent(nil, `a"b`, 42, true, []byte(`{"x":1}`)), &f); err != nil {
		t.Fatal(err)
	}
	if f.Type != "event" || f.Channel != `a"b` || f.Seq != 42 || !f.Snapshot || string(f.Data) != `{"x":1}` {
		t.Fatalf("frame = %+v", f)
	}
	// Foreign bytes on a subject cannot break the frame.
	if !json.Valid(appendEvent(nil, "c", 1, false, []byte("not json"))) {
		t.Fatal("an invalid payload produced an invalid frame")
	}
}
