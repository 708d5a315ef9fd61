package streams

import (
	stdjson "encoding/json"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	fastjson "github.com/segmentio/encoding/json"
)

// TestPredictionJSONMatchesStdlib: the prediction's own writer writes the
// bytes of encoding/json, or gives up (and Encode then takes the
// reflective codec), over random predictions with every optional part
// present or not, floats of every magnitude and the edges of the two float
// formats, times in odd zones, and strings that need escaping.
func TestPredictionJSONMatchesStdlib(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	edges := []float64{0, math.Copysign(0, -1), 1e-6, 9.999999e-7, 1e-7, 1e21, 9.99999e20, 5e-324, math.MaxFloat64,
		123456789012345678, 0.1, 1.0 / 3, -2.5e-9, 91248.19}
	// seen: a prediction repeats values across its horizons (the close
	// as the no-change point forecast, the bounds, the levels), which
	// the writer copies rather than formats again.
	var seen []float64
	float := func() float64 {
		var f float64
		switch {
		case len(seen) > 0 && rng.IntN(3) == 0:
			f = seen[rng.IntN(len(seen))]
		case rng.IntN(3) == 0:
			f = edges[rng.IntN(len(edges))]
		default:
			f = (rng.Float64() - 0.5) * math.Pow(10, float64(rng.IntN(50)-25))
		}
		seen = append(seen, f)
		return f
	}
	strs := []string{"BTC/USD", "ols-BTC-USD-1m-20261202T150000Z", "no_change", "", "~ !#$%'()*+,-./:;=?@[]^_`{|}"}
	escaped := []string{"a<b>", "x&y", `q"uote`, "back\\slash", "tab\t", "é", "\u2028", "\xff"}
	str := func() string {
		if rng.IntN(60) == 0 {
			return escaped[rng.IntN(len(escaped))]
		}
		return strs[rng.IntN(len(strs))]
	}
	zones := []*time.Location{time.UTC, time.FixedZone("p", 3600), time.FixedZone("m", -5*3600-30*60), time.FixedZone("zero", 0),
		time.FixedZone("sec", 3600+7), time.FixedZone("day", 24*3600)}
	tm := func() time.Time {
		sec := rng.Int64N(400*365*86400) - 200*365*86400 + time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
		var ns int64
		switch rng.IntN(3) {
		case 0:
			ns = rng.Int64N(1e9)
		case 1:
			ns = rng.Int64N(1000) * 1e6
		}
		if rng.IntN(40) == 0 {
			sec = time.Date(10000+rng.IntN(5), 1, 1, 0, 0, 0, 0, time.UTC).Unix()
		}
		z := zones[rng.IntN(4)]
		if rng.IntN(60) == 0 {
			z = zones[rng.IntN(len(zones))]
		}
		return time.Unix(sec, ns).In(z)
	}
	refused := 0
	for i := range 5000 {
		seen = seen[:0]
		p := Prediction{Schema: Schema{V: rng.IntN(3)}, Symbol: str(), Interval: []Interval{Interval1m, Interval5m, Interval1h, Interval1d}[rng.IntN(4)],
			Start: tm(), Target: tm(), Horizon: rng.IntN(100) - 2, ModelID: str(), Close: float(), LogReturn: float(),
			PredictedClose: float(), Lower: float(), Upper: float(), CandleSeq: rng.Uint64()}
		if rng.IntN(2) == 0 {
			p.Window = map[Quality]int{}
			for range rng.IntN(4) {
				p.Window[Quality(str())] = rng.IntN(200) - 10
			}
		}
		for range rng.IntN(5) {
			p.Trace = append(p.Trace, Hop{Stage: str(), At: tm()})
		}
		if rng.IntN(2) == 0 {
			p.Model = str()
		}
		if rng.IntN(2) == 0 {
			p.Sigma = float()
		}
		for range rng.IntN(4) {
			f := HorizonForecast{Horizon: rng.IntN(60), Target: tm(), Model: str(), ModelID: str(), LogReturn: float(),
				PredictedClose: float(), Sigma: float(), Ready: rng.IntN(2) == 0, Failing: rng.IntN(3) == 0}
			if rng.IntN(2) == 0 {
				f.VolatilityModel = str()
			}
			if rng.IntN(2) == 0 {
				f.FailingReason = str()
			}
			for range rng.IntN(4) {
				iv := ForecastInterval{Level: float(), Lower: float(), Upper: float(), Covered: rng.IntN(1000)}
				if rng.IntN(2) == 0 {
					c := float()
					iv.Coverage = &c
				}
				f.Intervals = append(f.Intervals, iv)
			}
			p.Forecasts = append(p.Forecasts, f)
		}
		if rng.IntN(50) == 0 {
			p.Close = math.NaN()
		}
		want, werr := stdjson.Marshal(&p)
		got, ok := appendPredictionJSON([]byte("prefix"), &p)
		if !ok {
			refused++
			continue
		}
		if werr != nil {
			t.Fatalf("%d: written, but encoding/json refuses it: %v\n%s", i, werr, got)
		}
		if string(got[6:]) != string(want) || string(got[:6]) != "prefix" {
			t.Fatalf("%d:\ngot  %s\nwant prefix%s", i, got, want)
		}
	}
	// Most inputs carry a string to escape or an odd zone; enough must
	// go through for the comparison to mean something.
	if refused > 4500 {
		t.Fatalf("%d of 5000 refused", refused)
	}
	t.Logf("%d of 5000 left to the reflective codec", refused)
}

// TestPredictionEncodeFallsBack: a prediction the writer gives up on is
// still encoded, by the reflective codec, as encoding/json would.
func TestPredictionEncodeFallsBack(t *testing.T) {
	_, _, p := hopEvents()
	p.ModelID = "ols <BTC> & \"co\""
	got, err := Encode(&p)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := stdjson.Marshal(&p)
	if string(got) != string(want) {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// BenchmarkPredictionEncode: a prediction as the predictor makes it (three
// horizons of intervals, four hops), through the reflective codec that
// encoded it before (segmentio) and through Encode now, paired.
func BenchmarkPredictionEncode(b *testing.B) {
	_, _, p := hopEvents()
	for _, h := range []int{1, 5, 15} {
		withForecast(&p, func(f *HorizonForecast) {
			f.Horizon, f.Target, f.Model, f.ModelID = h, p.Start.Add(time.Duration(h)*time.Minute), ModelLinear, p.ModelID
			f.PredictedClose, f.LogReturn, f.Sigma, f.VolatilityModel = 91248.19, 7.12e-05, 0.000912*float64(h), "ewma_0.94"
			f.Intervals = nil
			for _, lv := range []float64{0.5, 0.8} {
				c := lv + 0.013
				f.Intervals = append(f.Intervals, ForecastInterval{Level: lv, Lower: 91120.5 - float64(h), Upper: 91375.9 + float64(h), Coverage: &c, Covered: 1440})
			}
		})
	}
	p.Forecasts = p.Forecasts[:3]
	p.Model, p.Sigma = ModelLinear, 0.000912
	if err := p.Validate(); err != nil {
		b.Fatal(err)
	}
	reflective := func() { p.V = SchemaVersion; _ = p.Validate(); _, _ = fastjson.Marshal(&p) }
	paired(b, reflective, func() { _, _ = Encode(&p) })
	data, _ := Encode(&p)
	b.ReportMetric(float64(len(data)), "bytes")
}

// TestPredictionTimeMatchesStdlib: the writer's times at offset zero, at
// the edges of the four-digit year and of the fraction, are encoding/json's.
func TestPredictionTimeMatchesStdlib(t *testing.T) {
	var times []time.Time
	for _, y := range []int{0, 5, 99, 999, 1000, 1969, 1970, 2026, 9999, -1, 10000} {
		for _, ns := range []int{0, 1, 10, 100000000, 120000000, 999999999, 123456789} {
			for _, z := range []*time.Location{time.UTC, time.FixedZone("zero", 0)} {
				times = append(times, time.Date(y, 12, 31, 23, 59, 59, ns, z), time.Date(y, 1, 1, 0, 0, 0, ns, z))
			}
		}
	}
	times = append(times, time.Time{}, time.Unix(0, 0), time.Now(), time.Now().UTC())
	for _, tm := range times {
		want, werr := stdjson.Marshal(tm)
		w := jsonWriter{ok: true}
		w.time(tm)
		switch {
		case !w.ok && werr == nil:
			t.Errorf("%v: refused, encoding/json writes %s", tm, want)
		case w.ok && werr != nil:
			t.Errorf("%v: written %s, encoding/json refuses it: %v", tm, w.b, werr)
		case w.ok && string(w.b) != string(want):
			t.Errorf("%v: got %s, want %s", tm, w.b, want)
		}
	}
}
