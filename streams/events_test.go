package streams

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func validCandle() Candle {
	return Candle{
		Symbol: "BTC/USD", Interval: Interval1m,
		Start: time.Date(2023, 3, 1, 5, 0, 0, 0, time.UTC),
		Open:  23500, High: 23510, Low: 23490, Close: 23505, VWAP: 23501, Volume: 1.5, Trades: 12,
		Quality: QualityLive,
	}
}

func TestCandleValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Candle)
		want   string
	}{
		{"valid", func(*Candle) {}, ""},
		{"NaN close", func(c *Candle) { c.Close = math.NaN() }, "close is NaN"},
		{"Inf high", func(c *Candle) { c.High = math.Inf(1) }, "high is +Inf"},
		{"negative open", func(c *Candle) { c.Open = -1 }, "open is negative"},
		{"negative volume", func(c *Candle) { c.Volume = -0.1 }, "volume is negative"},
		{"NaN volume", func(c *Candle) { c.Volume = math.NaN() }, "volume is NaN"},
		{"zero price", func(c *Candle) { c.Low = 0; c.Open = 0 }, "zero price"},
		{"high below low", func(c *Candle) { c.High, c.Low = 23480, 23490 }, "high 23480 below low"},
		{"open above high", func(c *Candle) { c.Open = 23600 }, "open 23600 outside"},
		{"open below low", func(c *Candle) { c.Open = 23000 }, "open 23000 outside"},
		{"close above high", func(c *Candle) { c.Close = 23600 }, "close 23600 outside"},
		{"close below low", func(c *Candle) { c.Close = 1 }, "close 1 outside"},
		{"unknown interval", func(c *Candle) { c.Interval = 7 }, "unknown interval 7"},
		{"empty symbol", func(c *Candle) { c.Symbol = "" }, "empty symbol"},
		{"lower-case symbol", func(c *Candle) { c.Symbol = "btc/usd" }, "invalid symbol"},
		{"wildcard symbol", func(c *Candle) { c.Symbol = "BTC/*" }, "invalid symbol"},
		{"off grid", func(c *Candle) { c.Start = c.Start.Add(30 * time.Second) }, "not on the 1m grid"},
		{"zero start", func(c *Candle) { c.Start = time.Time{} }, "zero start"},
		{"negative trades", func(c *Candle) { c.Trades = -1 }, "negative trade count"},
		{"unknown quality", func(c *Candle) { c.Quality = "guessed" }, "unknown quality"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validCandle()
			tt.mutate(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %q, want it to contain %q", err, tt.want)
			}
			if !errors.Is(err, ErrInvalidEvent) || !errors.Is(err, ErrPermanent) {
				t.Errorf("Validate() = %v, want ErrInvalidEvent and ErrPermanent", err)
			}
		})
	}
}

// withForecast adds a valid 15-interval forecast to p, changed by edit.
func withForecast(p *Prediction, edit func(*HorizonForecast)) *Prediction {
	cov := 0.8
	f := HorizonForecast{Horizon: 15, Target: p.Start.Add(15 * time.Minute), Model: ModelNoChange, ModelID: ModelNoChange,
		PredictedClose: p.Close, Sigma: 0.002, Ready: true,
		Intervals: []ForecastInterval{{Level: 0.8, Lower: 99.7, Upper: 100.3, Coverage: &cov, Covered: 10}}}
	if edit != nil {
		edit(&f)
	}
	p.Forecasts = append(p.Forecasts, f)
	return p
}

func TestEventsRejectInvalid(t *testing.T) {
	start := time.Date(2023, 3, 1, 5, 0, 0, 0, time.UTC)
	okPrediction := func() *Prediction {
		return &Prediction{Symbol: "BTC/USD", Interval: Interval1m, Start: start, Target: start.Add(time.Minute),
			Horizon: 1, ModelID: "m1", Close: 100, LogReturn: 0.001, PredictedClose: 100.1, Lower: 99, Upper: 101}
	}
	okTick := func() *Tick { c := validCandle(); return &Tick{Candle: c, ReceivedAt: start} }
	tests := []struct {
		name  string
		event Event
		ok    bool
	}{
		{"tick", okTick(), true},
		{"tick NaN", func() Event { tk := okTick(); tk.Candle.Close = math.NaN(); return tk }(), false},
		{"features", &FeatureVector{Symbol: "BTC/USD", Interval: Interval1m, Start: start, Close: 1, Names: []string{"a"}, Values: []float64{1}}, true},
		{"features NaN", &FeatureVector{Symbol: "BTC/USD", Interval: Interval1m, Start: start, Close: 1, Names: []string{"a"}, Values: []float64{math.NaN()}}, false},
		{"features length", &FeatureVector{Symbol: "BTC/USD", Interval: Interval1m, Start: start, Close: 1, Names: []string{"a", "b"}, Values: []float64{1}}, false},
		{"features empty symbol", &FeatureVector{Interval: Interval1m, Start: start, Close: 1}, false},
		{"prediction", okPrediction(), true},
		{"prediction NaN", func() Event { p := okPrediction(); p.LogReturn = math.NaN(); return p }(), false},
		{"prediction negative close", func() Event { p := okPrediction(); p.Close = -5; return p }(), false},
		{"prediction no model", func() Event { p := okPrediction(); p.ModelID = ""; return p }(), false},
		{"prediction target before start", func() Event { p := okPrediction(); p.Target = start; return p }(), false},
		{"prediction unknown interval", func() Event { p := okPrediction(); p.Interval = 2; return p }(), false},
		{"prediction with forecasts", withForecast(okPrediction(), nil), true},
		{"prediction forecast interval not around", withForecast(okPrediction(), func(f *HorizonForecast) { f.Intervals[0].Lower = 100.5 }), false},
		{"prediction forecast coverage above one", withForecast(okPrediction(), func(f *HorizonForecast) { c := 1.5; f.Intervals[0].Coverage = &c }), false},
		{"prediction forecast no model", withForecast(okPrediction(), func(f *HorizonForecast) { f.Model = "" }), false},
		{"prediction forecast NaN sigma", withForecast(okPrediction(), func(f *HorizonForecast) { f.Sigma = math.NaN() }), false},
		{"prediction forecast target at start", withForecast(okPrediction(), func(f *HorizonForecast) { f.Target = start }), false},
		{"alert", &Alert{ID: "a", RuleID: "r", Kind: "move", Symbol: "BTC/USD", Interval: Interval1m, At: start, Value: 1, Threshold: 1}, true},
		{"alert Inf", &Alert{ID: "a", RuleID: "r", Kind: "move", Symbol: "BTC/USD", Interval: Interval1m, At: start, Value: math.Inf(-1)}, false},
		{"job", &Job{ID: "j", Kind: JobTrain, Symbol: "BTC/USD", Interval: Interval1m, RequestedAt: start}, true},
		{"job unknown kind", &Job{ID: "j", Kind: "dance", Symbol: "BTC/USD", Interval: Interval1m, RequestedAt: start}, false},
		{"job empty symbol", &Job{ID: "j", Kind: JobTrain, Interval: Interval1m, RequestedAt: start}, false},
		{"audit", &AuditEvent{ID: "x", Action: "auth.login", Actor: "ann", Outcome: "ok", At: start}, true},
		{"audit wildcard", &AuditEvent{ID: "x", Action: "auth.>", Actor: "ann", Outcome: "ok", At: start}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.event.Validate()
			if tt.ok != (err == nil) {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if _, encErr := Encode(tt.event); (encErr == nil) != tt.ok {
				t.Fatalf("Encode() error = %v, want ok=%v", encErr, tt.ok)
			}
		})
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	c := validCandle()
	c.Trace = Trace{}.Stamp("ingest", c.End())
	data, err := Encode(&c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"v":1`) || !strings.Contains(string(data), `"interval":"1m"`) {
		t.Fatalf("encoding %s lacks version or interval token", data)
	}
	got, err := Decode[Candle](data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Start != c.Start || got.Close != c.Close || got.Quality != c.Quality || len(got.Trace) != 1 {
		t.Fatalf("round trip changed the candle: %+v != %+v", got, c)
	}
}

func TestDecodeRejects(t *testing.T) {
	for name, data := range map[string]string{
		"not json":      `{"v":1,`,
		"wrong version": `{"v":2,"symbol":"BTC/USD","interval":"1m","start":"2023-03-01T05:00:00Z","open":1,"high":1,"low":1,"close":1,"quality":"live"}`,
		"no version":    `{"symbol":"BTC/USD","interval":"1m","start":"2023-03-01T05:00:00Z","open":1,"high":1,"low":1,"close":1,"quality":"live"}`,
		"bad interval":  `{"v":1,"symbol":"BTC/USD","interval":"7m","start":"2023-03-01T05:00:00Z","open":1,"high":1,"low":1,"close":1,"quality":"live"}`,
		"invalid":       `{"v":1,"symbol":"BTC/USD","interval":"1m","start":"2023-03-01T05:00:00Z","open":1,"high":0.5,"low":1,"close":1,"quality":"live"}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Decode[Candle]([]byte(data)); !errors.Is(err, ErrPermanent) {
				t.Fatalf("Decode() = %v, want a permanent error", err)
			}
		})
	}
}

func TestMsgIDsAreDeterministic(t *testing.T) {
	a, b := validCandle(), validCandle()
	b.Close, b.Quality = 23501, QualityBackfilled
	if a.MsgID() != "candle:1m:BTC-USD:1677646800" {
		t.Fatalf("candle id = %q", a.MsgID())
	}
	if a.MsgID() != b.MsgID() {
		t.Fatal("the same bar from two sources must share an id")
	}
	t1, t2 := Tick{Candle: a}, Tick{Candle: a}
	t2.Candle.Trades++
	if t1.MsgID() == t2.MsgID() {
		t.Fatal("successive running-candle updates must have distinct ids")
	}
	if t1.MsgID() != "tick:1m:BTC-USD:1677646800:12:1.5" {
		t.Fatalf("tick id = %q", t1.MsgID())
	}
}

func TestTraceStampDoesNotAlias(t *testing.T) {
	base := make(Trace, 1, 4)
	base[0] = Hop{Stage: "ingest"}
	a := base.Stamp("features", time.Unix(1, 0))
	b := base.Stamp("notifier", time.Unix(2, 0))
	if a[1].Stage != "features" || b[1].Stage != "notifier" {
		t.Fatalf("stamps alias each other: %v %v", a, b)
	}
	if at, ok := a.At("features"); !ok || !at.Equal(time.Unix(1, 0)) {
		t.Fatalf("At(features) = %v, %v", at, ok)
	}
}

// TestCandleFromTheFuture (issue 11 item 9): a candle starting after the
// clock plus the skew bound is invalid, permanently, everywhere a candle is
// validated (Encode and Decode included); within the bound it is not.
func TestCandleFromTheFuture(t *testing.T) {
	now := time.Date(2026, 12, 2, 15, 0, 0, 0, time.UTC)
	c := validCandle()
	c.Start = now.Add(MaxClockSkew)
	if err := c.ValidateAt(now); err != nil {
		t.Fatalf("a candle within the skew bound: %v", err)
	}
	c.Start = now.Add(MaxClockSkew + time.Minute)
	err := c.ValidateAt(now)
	if !errors.Is(err, ErrFutureCandle) || !errors.Is(err, ErrInvalidEvent) || !errors.Is(err, ErrPermanent) {
		t.Fatalf("ValidateAt = %v, want ErrFutureCandle, ErrInvalidEvent and ErrPermanent", err)
	}
	c.Start = time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := Encode(&c); !errors.Is(err, ErrFutureCandle) {
		t.Errorf("Encode of a 2031 candle = %v, want ErrFutureCandle", err)
	}
	tick := Tick{Candle: c, ReceivedAt: now}
	if err := tick.Validate(); !errors.Is(err, ErrFutureCandle) {
		t.Errorf("Tick.Validate of a 2031 candle = %v, want ErrFutureCandle", err)
	}
	data := []byte(`{"v":1,"symbol":"BTC/USD","interval":"1m","start":"2031-01-01T00:00:00Z","open":1,"high":1,"low":1,"close":1,"quality":"imported"}`)
	if _, err := Decode[Candle](data); !errors.Is(err, ErrFutureCandle) {
		t.Errorf("Decode of a 2031 candle = %v, want ErrFutureCandle", err)
	}
}
