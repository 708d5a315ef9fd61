package notifier

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"cryptostream/streams"
)

type want struct {
	at       string // HH:MM on 3 March 2023, UTC
	seq      uint64
	from, to float64
}

func hm(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse("2006-01-02 15:04", "2023-03-03 "+s)
	if err != nil {
		t.Fatal(err)
	}
	return v.UTC()
}

func feedCandles(e *Engine, cs []seqCandle) []streams.Alert {
	var out []streams.Alert
	for _, c := range cs {
		out = append(out, e.Candle(c.Candle, Source{streams.StreamMarket, c.seq})...)
	}
	return out
}

// The expected firings were worked out from the file by a separate script
// (the window's reference is the last close at or before its start).
func TestPercentMoveOnRealData(t *testing.T) {
	cs := stretch(t)
	for _, tc := range []struct {
		name       string
		threshold  float64
		cooldown   time.Duration
		hysteresis float64
		want       []want
		suppressed map[string]int
	}{
		{"cooldown and hysteresis", 0.7, 30 * time.Minute, 0.3,
			[]want{{"01:21", 2661, 23414.1, 23170.8}, {"01:58", 2698, 22291.2, 22128.7}},
			map[string]int{ReasonCooldown: 1}},
		{"hysteresis only", 0.7, 0, 0.3,
			[]want{{"01:21", 2661, 23414.1, 23170.8}, {"01:58", 2698, 22291.2, 22128.7}, {"02:13", 2713, 22128.7, 22287.8}},
			map[string]int{}},
		// Without hysteresis the dip back under 0.7% at 01:59 re-arms the
		// rule and 02:00 fires again.
		{"neither", 0.7, 0, 0,
			[]want{{"01:21", 2661, 23414.1, 23170.8}, {"01:58", 2698, 22291.2, 22128.7}, {"02:00", 2700, 22346.8, 22152.4}, {"02:13", 2713, 22128.7, 22287.8}},
			map[string]int{}},
		{"the sharp move", 2, 30 * time.Minute, 0.25,
			[]want{{"01:29", 2669, 23420.5, 22872.3}},
			map[string]int{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			supp := map[string]int{}
			e := NewEngine(EngineConfig{OnSuppress: func(_ *Rule, reason string) { supp[reason]++ }})
			e.SetRules(rules(t, Rule{ID: "move", Owner: "alice", OwnerID: "id-alice", Kind: KindPercentMove, Symbol: "BTC/USD", Threshold: tc.threshold,
				Window: Duration(15 * time.Minute), Cooldown: Duration(tc.cooldown), Hysteresis: tc.hysteresis}))
			got := feedCandles(e, cs)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d firings, want %d: %v", len(got), len(tc.want), got)
			}
			for i, w := range tc.want {
				a := got[i]
				pct := (w.to/w.from - 1) * 100
				if !a.At.Equal(hm(t, w.at)) || a.Seq != w.seq || a.Stream != streams.StreamMarket || a.Values["from"] != w.from ||
					a.Values["to"] != w.to || math.Abs(a.Value-pct) > 1e-9 || a.Owner != "id-alice" || a.Symbol != "BTC/USD" {
					t.Errorf("firing %d = %+v, want %+v", i, a, w)
				}
				if err := (&a).Validate(); err != nil {
					t.Errorf("firing %d invalid: %v", i, err)
				}
			}
			if fmt.Sprint(supp) != fmt.Sprint(tc.suppressed) {
				t.Errorf("suppressed %v, want %v", supp, tc.suppressed)
			}
		})
	}
}

func TestMessageIsASentence(t *testing.T) {
	e := NewEngine(EngineConfig{})
	e.SetRules(rules(t, Rule{ID: "move", Kind: KindPercentMove, Symbol: "BTC/USD", Threshold: 2, Window: Duration(15 * time.Minute)}))
	got := feedCandles(e, stretch(t))
	if len(got) != 1 || got[0].Message != "BTC/USD fell 2.3% in 15 min to 22,872" {
		t.Fatalf("got %+v", got)
	}
	if got[0].ID != "move:BTC-USD:"+fmt.Sprint(hm(t, "01:29").Unix()) || got[0].MsgID() != "alert:"+got[0].ID {
		t.Errorf("id %q is not rule, symbol and time", got[0].ID)
	}
}

func TestVolatilitySpikeOnRealData(t *testing.T) {
	e := NewEngine(EngineConfig{})
	e.SetRules(rules(t, Rule{ID: "vol", Kind: KindVolatilitySpike, Symbol: "BTC/USD", Threshold: 3, Window: Duration(15 * time.Minute), Count: 4, Hysteresis: 0.2}))
	got := feedCandles(e, stretch(t))
	if len(got) != 1 || !got[0].At.Equal(hm(t, "01:19")) || math.Abs(got[0].Value-3.5859) > 1e-4 {
		t.Fatalf("got %+v, want one firing at 01:19 with ratio 3.5859", got)
	}
}

// A running candle (TICKS) fires a minute before the close does, and
// once_per_candle still fires once.
func TestTriggerModesOnTicks(t *testing.T) {
	evs := rollup(stretch(t), streams.Interval5m)
	for _, tc := range []struct {
		trigger Trigger
		at      string
		stream  string
		value   float64
	}{
		{TriggerOncePerClose, "01:30", streams.StreamMarket, 22857.1},
		{TriggerOncePerCandle, "01:29", streams.StreamTicks, 22872.3},
		{TriggerOnce, "01:29", streams.StreamTicks, 22872.3},
	} {
		t.Run(string(tc.trigger), func(t *testing.T) {
			e := NewEngine(EngineConfig{})
			e.SetRules(rules(t, Rule{ID: "cross", Kind: KindPriceCross, Symbol: "BTC/USD", Interval: streams.Interval5m, Direction: Down,
				Threshold: 22900, Trigger: tc.trigger, Hysteresis: 0.01}))
			var got []streams.Alert
			for _, ev := range evs {
				if ev.tick != nil {
					got = append(got, e.Tick(*ev.tick, Source{streams.StreamTicks, ev.seq})...)
				} else {
					got = append(got, e.Candle(*ev.candle, Source{streams.StreamMarket, ev.seq})...)
				}
			}
			if len(got) != 1 || !got[0].At.Equal(hm(t, tc.at)) || got[0].Stream != tc.stream || got[0].Value != tc.value {
				t.Fatalf("got %+v", got)
			}
		})
	}
}

func candle(sym string, start time.Time, close float64) streams.Candle {
	return streams.Candle{Symbol: sym, Interval: streams.Interval1m, Start: start, Open: close, High: close, Low: close, Close: close, Quality: streams.QualityLive}
}

var t0 = time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)

func closes(e *Engine, sym string, from int, prices ...float64) []streams.Alert {
	var out []streams.Alert
	for i, p := range prices {
		out = append(out, e.Candle(candle(sym, t0.Add(time.Duration(from+i)*time.Minute), p), Source{streams.StreamMarket, uint64(from + i + 1)})...)
	}
	return out
}

func TestPriceCross(t *testing.T) {
	t.Run("needs the near side first", func(t *testing.T) {
		e := NewEngine(EngineConfig{})
		e.SetRules(rules(t, Rule{ID: "c", Kind: KindPriceCross, Symbol: "BTC/USD", Direction: Up, Threshold: 100}))
		if got := closes(e, "BTC/USD", 0, 105, 106, 99, 101, 102); len(got) != 1 || got[0].Value != 101 {
			t.Fatalf("got %+v, want one firing at 101", got)
		}
	})
	t.Run("either way with hysteresis", func(t *testing.T) {
		e := NewEngine(EngineConfig{})
		e.SetRules(rules(t, Rule{ID: "c", Kind: KindPriceCross, Symbol: "BTC/USD", Threshold: 100, Hysteresis: 0.02}))
		// 97 arms up; 101 fires up but is inside the band, so down is not
		// armed and 99 does not fire; 103 arms down; 97 fires down.
		got := closes(e, "BTC/USD", 0, 97, 101, 99, 103, 97)
		if len(got) != 2 || got[0].Value != 101 || got[1].Value != 97 || !strings.Contains(got[1].Message, "fell below 100.00") {
			t.Fatalf("got %+v", got)
		}
	})
}

func TestGuards(t *testing.T) {
	base := Rule{ID: "c", Owner: "bob", OwnerID: "id-bob", Kind: KindPriceCross, Symbol: "BTC/USD", Direction: Up, Threshold: 100}
	// Five crossings, one a minute.
	prices := []float64{99, 101, 99, 101, 99, 101, 99, 101, 99, 101}
	t.Run("once", func(t *testing.T) {
		r := base
		r.Trigger = TriggerOnce
		supp := map[string]int{}
		e := NewEngine(EngineConfig{OnSuppress: func(_ *Rule, why string) { supp[why]++ }})
		e.SetRules(rules(t, r))
		if got := closes(e, "BTC/USD", 0, prices...); len(got) != 1 || supp[ReasonSpent] != 4 {
			t.Fatalf("got %d firings, suppressed %v", len(got), supp)
		}
	})
	t.Run("a spent rule stays spent", func(t *testing.T) {
		r := base
		r.Trigger, r.FiredAt = TriggerOnce, &t0
		e := NewEngine(EngineConfig{})
		e.SetRules(rules(t, r))
		if got := closes(e, "BTC/USD", 0, prices...); len(got) != 0 {
			t.Fatalf("got %+v", got)
		}
	})
	t.Run("expiry", func(t *testing.T) {
		r := base
		exp := t0.Add(4 * time.Minute)
		r.ExpiresAt = &exp
		e := NewEngine(EngineConfig{})
		e.SetRules(rules(t, r))
		// Closes end at t0+1m, +2m, ...: crossings at +2m and +4m; the
		// second is at the expiry.
		if got := closes(e, "BTC/USD", 0, prices...); len(got) != 1 {
			t.Fatalf("got %+v", got)
		}
	})
	t.Run("user rate cap", func(t *testing.T) {
		supp := map[string]int{}
		e := NewEngine(EngineConfig{UserRateCap: 3, OnSuppress: func(_ *Rule, why string) { supp[why]++ }})
		sys := base
		sys.ID, sys.Owner, sys.OwnerID = "s", SystemOwner, SystemOwner
		e.SetRules(rules(t, base, sys))
		got := closes(e, "BTC/USD", 0, prices...)
		n := map[string]int{}
		for _, a := range got {
			n[a.Owner]++
		}
		if n["id-bob"] != 3 || n[""] != 5 || supp[ReasonRateCapped] != 2 {
			t.Fatalf("firings by owner %v, suppressed %v", n, supp)
		}
	})
	t.Run("a rule edit keeps the state of an unchanged condition", func(t *testing.T) {
		e := NewEngine(EngineConfig{})
		e.SetRules(rules(t, base))
		closes(e, "BTC/USD", 0, 99, 101)
		renamed := base
		renamed.Name = "renamed"
		e.SetRules(rules(t, renamed))
		if got := closes(e, "BTC/USD", 2, 102); len(got) != 0 {
			t.Fatalf("re-fired after a rename: %+v", got)
		}
		moved := base
		moved.Threshold = 101.5
		e.SetRules(rules(t, moved))
		if got := closes(e, "BTC/USD", 3, 101, 103); len(got) != 1 {
			t.Fatalf("got %+v", got)
		}
	})
	t.Run("redelivered close changes nothing", func(t *testing.T) {
		e := NewEngine(EngineConfig{})
		e.SetRules(rules(t, base))
		closes(e, "BTC/USD", 0, 99, 101)
		if got := closes(e, "BTC/USD", 1, 101); len(got) != 0 {
			t.Fatalf("got %+v", got)
		}
	})
}

func prediction(start time.Time, close, predicted float64) streams.Prediction {
	return streams.Prediction{Symbol: "BTC/USD", Interval: streams.Interval1m, Start: start, Target: start.Add(time.Minute), Horizon: 1,
		ModelID: "m1", Close: close, LogReturn: math.Log(predicted / close), PredictedClose: predicted, Lower: predicted * 0.99, Upper: predicted * 1.01}
}

func TestPredictedMove(t *testing.T) {
	e := NewEngine(EngineConfig{})
	e.SetRules(rules(t, Rule{ID: "p", Kind: KindPredictedMove, Symbol: "BTC/USD", Direction: Up, Threshold: 1}))
	var got []streams.Alert
	for i, pred := range []float64{100.5, 101.2, 101.5, 100.2, 102} {
		got = append(got, e.Prediction(prediction(t0.Add(time.Duration(i)*time.Minute), 100, pred), Source{streams.StreamPredictions, uint64(i + 1)})...)
	}
	if len(got) != 2 || got[0].Values["predicted"] != 101.2 || got[1].Values["predicted"] != 102 {
		t.Fatalf("got %+v", got)
	}
	if !strings.Contains(got[0].Message, "predicted to rise 1.2% to 101.20") || !strings.Contains(got[0].Message, "interval 100.19 to 102.21") {
		t.Errorf("message %q", got[0].Message)
	}
}

// Model error is scored from the predictions alone (each carries the
// close its predecessors targeted), so candles fed in any interleaving, or
// none, give the same firings.
func TestModelError(t *testing.T) {
	for _, tc := range []struct {
		name      string
		threshold float64
		k         float64 // the prediction is k times the coming return
		model     func(i int) string
		fires     bool
	}{
		// Actual returns alternate +-0.1%: predicting the opposite (error
		// 0.2%) is worse than predicting no change (0.1%), predicting half
		// the move (0.05%) is better.
		{"worse than zero", 0, -1, nil, true},
		{"better than zero", 0, 0.5, nil, false},
		{"above a level", 0.15, -1, nil, true},
		{"below a level", 0.3, -1, nil, false},
		// The no-change forecast is not a model to judge against itself.
		{"no champion", 0, 0, func(int) string { return streams.ModelNoChange }, false},
		// A new champion every 8 predictions never has 10 of its own.
		{"new champions", 0, -1, func(i int) string { return fmt.Sprint("m", i/8) }, false},
	} {
		for _, candles := range []string{"none", "before", "after"} {
			t.Run(tc.name+"/candles "+candles, func(t *testing.T) {
				e := NewEngine(EngineConfig{})
				e.SetRules(rules(t, Rule{ID: "m", Kind: KindModelError, Symbol: "BTC/USD", Threshold: tc.threshold, Count: 10}))
				price := 100.0
				var got []streams.Alert
				for i := range 30 {
					start := t0.Add(time.Duration(i) * time.Minute)
					c := candle("BTC/USD", start, price)
					if candles == "before" {
						got = append(got, e.Candle(c, Source{streams.StreamMarket, uint64(i + 1)})...)
					}
					next := 0.001 * float64(1-2*(i%2))
					p := prediction(start, price, price*math.Exp(tc.k*next))
					if tc.model != nil {
						p.ModelID = tc.model(i)
					}
					got = append(got, e.Prediction(p, Source{streams.StreamPredictions, uint64(i + 1)})...)
					if candles == "after" {
						got = append(got, e.Candle(c, Source{streams.StreamMarket, uint64(i + 1)})...)
					}
					price *= math.Exp(next)
				}
				if (len(got) > 0) != tc.fires || len(got) > 1 {
					t.Fatalf("got %+v", got)
				}
				if tc.fires && (got[0].Stream != streams.StreamPredictions || got[0].Seq != 11) {
					t.Fatalf("fired on %s %d, want the prediction that scored the 10th", got[0].Stream, got[0].Seq)
				}
			})
		}
	}
}

func login(at time.Time, user, ip string) streams.AuditEvent {
	return streams.AuditEvent{ID: fmt.Sprint(at.UnixNano(), user), Action: "auth.login", Actor: user, Target: user, Outcome: "failed", Remote: ip, At: at}
}

func TestSecurityRules(t *testing.T) {
	e := NewEngine(EngineConfig{})
	e.SetRules(rules(t, SystemRules(SystemConfig{FailedLogins: 20, FailedLoginsWindow: time.Minute, RoleChanges: true, UserDeletions: true}, nil)...))
	var got []streams.Alert
	feed := func(a streams.AuditEvent) { got = append(got, e.Audit(a, Source{streams.StreamAudit, 1})...) }
	// 19 failures in a minute for alice from spread addresses: nothing.
	for i := range 19 {
		feed(login(t0.Add(time.Duration(i)*time.Second), "alice", fmt.Sprintf("10.0.0.%d", i)))
	}
	if len(got) != 0 {
		t.Fatalf("19 failures fired %+v", got)
	}
	// The 20th, and more: one alert for alice, none per address.
	for i := 19; i < 30; i++ {
		feed(login(t0.Add(time.Duration(i)*time.Second), "Alice", fmt.Sprintf("10.0.0.%d", i)))
	}
	if len(got) != 1 || got[0].Key != "alice" || got[0].Owner != streams.AlertAudienceAdmins || got[0].Message != "20 failed logins for user alice in 1 min" {
		t.Fatalf("got %+v", got)
	}
	if err := (&got[0]).Validate(); err != nil || got[0].Subject() != streams.AlertSecuritySubject {
		t.Fatalf("security alert: %v, subject %s", err, got[0].Subject())
	}
	// Refused attempts the gateway counted into one event count too.
	got = nil
	feed(login(t0.Add(30*time.Minute), "bob", "10.1.1.1"))
	agg := login(t0.Add(30*time.Minute+time.Second), "bob", "10.1.1.1")
	agg.Outcome, agg.Count, agg.Until = "rate_limited", 19, t0.Add(30*time.Minute+20*time.Second)
	feed(agg)
	if len(got) != 2 || got[0].Key != "10.1.1.1" || got[1].Key != "bob" || !got[0].At.Equal(agg.Until) {
		t.Fatalf("aggregated refusals: %+v", got)
	}
	// 20 spread over two minutes from one address: never 20 in a minute.
	got = nil
	for i := range 20 {
		feed(login(t0.Add(time.Hour+time.Duration(i)*6*time.Second), fmt.Sprint("u", i), "10.9.9.9"))
	}
	if len(got) != 0 {
		t.Fatalf("20 in two minutes fired %+v", got)
	}
	feed(streams.AuditEvent{ID: "r", Action: "user.role", Actor: "root", Target: "mallory", Outcome: "ok", Detail: "user -> admin", At: t0.Add(2 * time.Hour)})
	feed(streams.AuditEvent{ID: "d", Action: "user.delete", Actor: "root", Target: "bob", Outcome: "ok", At: t0.Add(2 * time.Hour)})
	feed(streams.AuditEvent{ID: "d2", Action: "user.delete", Actor: "root", Target: "carol", Outcome: "failed", At: t0.Add(2 * time.Hour)})
	if len(got) != 2 || got[0].Kind != string(KindRoleGranted) || got[1].Key != "bob" {
		t.Fatalf("got %+v", got)
	}
}

func TestSystemRulesValidate(t *testing.T) {
	rs := SystemRules(DefaultSystem, []string{"BTC/USD", "ETH/USD"})
	rules(t, rs...)
	if len(rs) != 6 {
		t.Fatalf("%d system rules", len(rs))
	}
}

func TestPreviewIsTheEngine(t *testing.T) {
	cs := stretch(t)
	r := rules(t, Rule{ID: "move", Kind: KindPercentMove, Symbol: "BTC/USD", Threshold: 0.7, Window: Duration(15 * time.Minute), Cooldown: Duration(30 * time.Minute), Hysteresis: 0.3})
	e := NewEngine(EngineConfig{})
	e.SetRules(r)
	live := feedCandles(e, cs)
	var in []Input
	for i := len(cs) - 1; i >= 0; i-- { // out of order on purpose: Preview sorts
		c := cs[i].Candle
		in = append(in, Input{Candle: &c, Source: Source{streams.StreamMarket, cs[i].seq}})
	}
	pre := Preview(EngineConfig{}, r, in)
	if fmt.Sprint(pre) != fmt.Sprint(live) || len(pre) != 2 {
		t.Fatalf("preview %v\nlive %v", pre, live)
	}
}

func TestValidate(t *testing.T) {
	ok := Rule{Kind: KindPercentMove, Symbol: "btc/usd", Threshold: 2, Window: Duration(15 * time.Minute)}
	for _, tc := range []struct {
		name  string
		edit  func(*Rule)
		field string
	}{
		{"valid", func(*Rule) {}, ""},
		{"unknown kind", func(r *Rule) { r.Kind = "moon" }, "kind"},
		{"NaN", func(r *Rule) { r.Threshold = math.NaN() }, "threshold"},
		{"Inf", func(r *Rule) { r.Threshold = math.Inf(1) }, "threshold"},
		{"percent out of range", func(r *Rule) { r.Threshold = 150 }, "threshold"},
		{"negative", func(r *Rule) { r.Threshold = -1 }, "threshold"},
		{"no window", func(r *Rule) { r.Window = 0 }, "window"},
		{"window off the grid", func(r *Rule) { r.Window = Duration(90 * time.Second) }, "window"},
		{"huge window", func(r *Rule) { r.Window = Duration(30 * 24 * time.Hour) }, "window"},
		{"bad symbol", func(r *Rule) { r.Symbol = "BTCUSD" }, "symbol"},
		{"bad interval", func(r *Rule) { r.Interval = 7 }, "interval"},
		{"bad direction", func(r *Rule) { r.Direction = "sideways" }, "direction"},
		{"bad trigger", func(r *Rule) { r.Trigger = "sometimes" }, "trigger"},
		{"hysteresis 1", func(r *Rule) { r.Hysteresis = 1 }, "hysteresis"},
		{"negative cooldown", func(r *Rule) { r.Cooldown = -1 }, "cooldown"},
		{"ticks for volatility", func(r *Rule) {
			r.Kind, r.Threshold, r.Count, r.Trigger = KindVolatilitySpike, 2, 4, TriggerOncePerCandle
		}, "trigger"},
		{"webhook format", func(r *Rule) { r.Webhook = &Webhook{URL: "https://example.com/h", Format: "teams"} }, "webhook.format"},
		{"failed logins without per", func(r *Rule) { r.Kind, r.Count, r.Window = KindFailedLogins, 20, Duration(time.Minute) }, "per"},
		{"control characters in the name", func(r *Rule) { r.Name = "a\x00b" }, "name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ok
			tc.edit(&r)
			r.Normalize()
			err := r.Validate()
			if tc.field == "" {
				if err != nil || r.Symbol != "BTC/USD" || r.Trigger != TriggerOncePerClose || r.Direction != Either {
					t.Fatalf("err %v, rule %+v", err, r)
				}
				return
			}
			fe, isField := err.(*FieldError)
			if !isField || fe.Field != tc.field {
				t.Fatalf("err %v, want a %s error", err, tc.field)
			}
		})
	}
}

// A message never reads as a move that did not happen: a move below the
// usual display precision is written with the figures it needs ("rose
// 0.00030%", never "rose 0.000%"), a level and the price that crossed it
// never read as the same number, and a price exactly at the level reached
// it.
func TestMessagesStayHonestBelowDisplayPrecision(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rule   Rule
		prices []float64
		want   []string
	}{
		{"tiny move", Rule{ID: "m", Kind: KindPercentMove, Symbol: "BTC/USD", Direction: Up, Threshold: 0.0001, Window: Duration(time.Minute)},
			[]float64{100_000, 100_000.3}, []string{"BTC/USD rose 0.00030% in 1 min to 100,000"}},
		{"small move", Rule{ID: "m", Kind: KindPercentMove, Symbol: "ETH/USD", Direction: Down, Threshold: 0.1, Window: Duration(time.Minute)},
			[]float64{2000, 1997}, []string{"ETH/USD fell 0.15% in 1 min to 1,997.0"}},
		{"cross within a unit", Rule{ID: "c", Kind: KindPriceCross, Symbol: "BTC/USD", Direction: Up, Threshold: 63_120.4},
			[]float64{63_120, 63_120.6}, []string{"BTC/USD rose above 63,120.4 to 63,120.6"}},
		{"cross by a hair", Rule{ID: "c", Kind: KindPriceCross, Symbol: "BTC/USD", Direction: Down, Threshold: 63_120.41},
			[]float64{63_121, 63_120.409}, []string{"BTC/USD fell below 63,120.410 to 63,120.409"}},
		{"at the level", Rule{ID: "c", Kind: KindPriceCross, Symbol: "BTC/USD", Direction: Up, Threshold: 100},
			[]float64{99, 100}, []string{"BTC/USD reached 100.00"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEngine(EngineConfig{})
			e.SetRules(rules(t, tc.rule))
			var got []string
			for _, a := range closes(e, tc.rule.Symbol, 0, tc.prices...) {
				got = append(got, a.Message)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("messages %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("predicted", func(t *testing.T) {
		e := NewEngine(EngineConfig{})
		e.SetRules(rules(t, Rule{ID: "p", Kind: KindPredictedMove, Symbol: "BTC/USD", Direction: Up, Threshold: 0.0001}))
		got := e.Prediction(prediction(t0, 100_000, 100_000.5), Source{streams.StreamPredictions, 1})
		if len(got) != 1 || !strings.Contains(got[0].Message, "predicted to rise 0.00050% to 100,000.5") {
			t.Fatalf("got %+v", got)
		}
	})
}

// forecast_failing follows the failing flag each prediction carries (the
// predictor's live score): it fires when the flag goes up at the rule's
// horizon, or at any horizon for a rule naming none, re-arms only once a
// prediction has it down again, and keeps its guards (cooldown).
func TestForecastFailing(t *testing.T) {
	reason := "the 80% interval covered 61.3% of the last 7 days' 2000 outcomes, outside 75-85%"
	// Minute by minute: which horizons (1, 15, 60) are failing.
	pattern := []string{"", "15", "15", "", "1 15", "1", "", "60", "", "15"}
	preds := make([]streams.Prediction, len(pattern))
	for i, fl := range pattern {
		p := prediction(t0.Add(time.Duration(i)*time.Minute), 100, 100)
		for _, h := range []int{1, 15, 60} {
			f := streams.HorizonForecast{Horizon: h, Target: p.Start.Add(time.Duration(h) * time.Minute), Model: streams.ModelNoChange, PredictedClose: 100}
			if slices.Contains(strings.Fields(fl), fmt.Sprint(h)) {
				f.Failing, f.FailingReason = true, reason
			}
			p.Forecasts = append(p.Forecasts, f)
		}
		preds[i] = p
	}
	for _, tc := range []struct {
		name string
		rule Rule
		want []string // minute: message
	}{
		{"at 15 min", Rule{Horizon: Duration(15 * time.Minute)}, []string{
			"1: BTC/USD 15 min forecast is failing: its 80% interval covered 61.3% of the last 7 days' 2000 outcomes, outside 75-85%",
			"4: BTC/USD 15 min forecast is failing: its 80% interval covered 61.3% of the last 7 days' 2000 outcomes, outside 75-85%",
			"9: BTC/USD 15 min forecast is failing: its 80% interval covered 61.3% of the last 7 days' 2000 outcomes, outside 75-85%"}},
		// 4 and 5 stay failing (15, then 1): one condition, no new alert.
		{"any horizon", Rule{}, []string{
			"1: BTC/USD 15 min forecast is failing: its 80% interval covered 61.3% of the last 7 days' 2000 outcomes, outside 75-85%",
			"4: BTC/USD 1 min, 15 min forecasts are failing: the 1 min one's 80% interval covered 61.3% of the last 7 days' 2000 outcomes, outside 75-85%",
			"7: BTC/USD 1 h forecast is failing: its 80% interval covered 61.3% of the last 7 days' 2000 outcomes, outside 75-85%",
			"9: BTC/USD 15 min forecast is failing: its 80% interval covered 61.3% of the last 7 days' 2000 outcomes, outside 75-85%"}},
		{"at 1 h", Rule{Horizon: Duration(time.Hour)}, []string{
			"7: BTC/USD 1 h forecast is failing: its 80% interval covered 61.3% of the last 7 days' 2000 outcomes, outside 75-85%"}},
		{"a horizon not forecast", Rule{Horizon: Duration(5 * time.Minute)}, nil},
		{"cooldown", Rule{Horizon: Duration(15 * time.Minute), Cooldown: Duration(5 * time.Minute)}, []string{
			"1: BTC/USD 15 min forecast is failing: its 80% interval covered 61.3% of the last 7 days' 2000 outcomes, outside 75-85%",
			"9: BTC/USD 15 min forecast is failing: its 80% interval covered 61.3% of the last 7 days' 2000 outcomes, outside 75-85%"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.rule
			r.ID, r.Kind, r.Symbol = "f", KindForecastFailing, "BTC/USD"
			e := NewEngine(EngineConfig{})
			e.SetRules(rules(t, r))
			var got []string
			for i, p := range preds {
				for _, a := range e.Prediction(p, Source{streams.StreamPredictions, uint64(i + 1)}) {
					if a.Seq != uint64(i+1) || a.Kind != string(KindForecastFailing) || !a.At.Equal(p.Start.Add(time.Minute)) {
						t.Errorf("alert %+v", a)
					}
					got = append(got, fmt.Sprint(i, ": ", a.Message))
				}
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestForecastFailingValidation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rule  Rule
		field string
	}{
		{"threshold", Rule{Threshold: 1}, "threshold"},
		{"horizon off the grid", Rule{Interval: streams.Interval5m, Horizon: Duration(7 * time.Minute)}, "horizon"},
		{"horizon too long", Rule{Horizon: Duration(25 * time.Hour)}, "horizon"},
		{"negative horizon", Rule{Horizon: Duration(-time.Minute)}, "horizon"},
		{"once per candle", Rule{Trigger: TriggerOncePerCandle}, "trigger"},
		{"horizon on another kind", Rule{Kind: KindPredictedMove, Threshold: 1, Horizon: Duration(time.Minute)}, "horizon"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.rule
			if r.Kind == "" {
				r.Kind = KindForecastFailing
			}
			r.ID, r.Symbol = "f", "BTC/USD"
			r.Normalize()
			var fe *FieldError
			if err := r.Validate(); !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("%+v: %v, want an error on %s", r, err, tc.field)
			}
		})
	}
}
