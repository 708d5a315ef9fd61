package streams

import (
	"errors"
	"testing"
	"time"
)

func TestNormalizeSymbol(t *testing.T) {
	tests := []struct{ in, want string }{
		{"BTC/USD", "BTC/USD"},
		{"XBT/USD", "BTC/USD"},
		{"xbt/usd", "BTC/USD"},
		{"XDG/EUR", "DOGE/EUR"},
		{"ETH/XBT", "ETH/BTC"},
		{"BTC-USD", "BTC/USD"},
		{" eth/usdt ", "ETH/USDT"},
		{"BTCUSD", ""},
		{"BTC/", ""},
		{"/USD", ""},
		{"BTC/US.D", ""},
		{"BTC/U*", ""},
		{"BTC/USD/EUR", ""},
	}
	for _, tt := range tests {
		got, err := NormalizeSymbol(tt.in)
		if tt.want == "" {
			if !errors.Is(err, ErrInvalidSymbol) {
				t.Errorf("NormalizeSymbol(%q) = %q, %v; want ErrInvalidSymbol", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("NormalizeSymbol(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestSubjects(t *testing.T) {
	if got := CandleSubject(Interval1m, "BTC/USD"); got != "market.candle.1m.BTC-USD" {
		t.Fatalf("CandleSubject = %q", got)
	}
	if got := CandleFilter(0, "ETH/USD"); got != "market.candle.*.ETH-USD" {
		t.Fatalf("CandleFilter = %q", got)
	}
	for _, subj := range []string{"market.candle.5m.ETH-USDT", "market.tick.1m.BTC-USD", "features.1h.BTC-EUR", "predictions.1d.DOGE-USD"} {
		k, err := ParseSeriesSubject(subj)
		if err != nil {
			t.Fatalf("ParseSeriesSubject(%q): %v", subj, err)
		}
		var rebuilt string
		switch {
		case subj[:13] == "market.candle":
			rebuilt = CandleSubject(k.Interval, k.Symbol)
		case subj[:11] == "market.tick":
			rebuilt = TickSubject(k.Interval, k.Symbol)
		case subj[:8] == "features":
			rebuilt = FeaturesSubject(k.Interval, k.Symbol)
		default:
			rebuilt = PredictionSubject(k.Interval, k.Symbol)
		}
		if rebuilt != subj {
			t.Fatalf("round trip %q -> %+v -> %q", subj, k, rebuilt)
		}
	}
	for _, bad := range []string{"market.candle.7m.BTC-USD", "market.candle.1m.BTCUSD", "market.candle.1m", "alerts.BTC-USD", "market.candle.1m.BTC-USD.x"} {
		if _, err := ParseSeriesSubject(bad); !errors.Is(err, ErrBadSubject) {
			t.Errorf("ParseSeriesSubject(%q) = %v, want ErrBadSubject", bad, err)
		}
	}
}

func TestIntervals(t *testing.T) {
	for _, iv := range Intervals() {
		got, err := ParseInterval(iv.String())
		if err != nil || got != iv {
			t.Fatalf("ParseInterval(%q) = %v, %v", iv, got, err)
		}
		if fromMin, err := IntervalFromMinutes(iv.Minutes()); err != nil || fromMin != iv {
			t.Fatalf("IntervalFromMinutes(%d) = %v, %v", iv.Minutes(), fromMin, err)
		}
	}
	if _, err := ParseInterval("2m"); !errors.Is(err, ErrUnknownInterval) {
		t.Fatalf("ParseInterval(2m) = %v", err)
	}
	ts := time.Date(2023, 3, 1, 5, 7, 31, 0, time.UTC)
	if got := Interval5m.Floor(ts); !got.Equal(time.Date(2023, 3, 1, 5, 5, 0, 0, time.UTC)) {
		t.Fatalf("Floor = %v", got)
	}
}

// FuzzSymbolRoundTrip checks that every symbol that normalises maps to a
// subject token and back to itself, and that the token is one subject level
// with no wildcard.
func FuzzSymbolRoundTrip(f *testing.F) {
	for _, s := range []string{"BTC/USD", "XBT/USD", "xdg/eur", "ETH-USDT", "A/B", "BTC/U-SD", "..", "*/>", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		sym, err := NormalizeSymbol(in)
		if err != nil {
			return
		}
		tok, err := SymbolToken(sym)
		if err != nil {
			t.Fatalf("normalised %q to %q, which has no token: %v", in, sym, err)
		}
		for _, r := range tok {
			if r == '.' || r == '*' || r == '>' || r == ' ' || r == '/' {
				t.Fatalf("token %q of %q is not one subject level", tok, sym)
			}
		}
		back, err := SymbolFromToken(tok)
		if err != nil || back != sym {
			t.Fatalf("token %q of %q maps back to %q, %v", tok, sym, back, err)
		}
		again, err := NormalizeSymbol(sym)
		if err != nil || again != sym {
			t.Fatalf("NormalizeSymbol is not idempotent on %q: %q, %v", sym, again, err)
		}
	})
}
