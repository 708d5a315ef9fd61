package evaluation_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"cryptostream/datatest"
	"cryptostream/forecast"
	"cryptostream/forecast/evaluation"
)

func TestReadBothLayouts(t *testing.T) {
	kraken := "1677646800,23797.6,23819.4,23797.6,23799.7,10.4,41\n1677646860,23798.9,23798.9,23775.2,23777.6,0.95,19\n" +
		"1677646860,1,1,1,1,1,1\n1677646980,23777.6,23801.2,23777.6,23783.5,21.9,59\nnot,a,row\n"
	header := "timestamp,open,high,low,close,volume\n1747699500,2,2,2,2,1\n1747699200,1,1,1,1,1\n1747699800,3,3,3,3,1\n"
	k, err := evaluation.Read("kraken", strings.NewReader(kraken))
	if err != nil {
		t.Fatal(err)
	}
	if len(k.Candles) != 3 || k.Duplicates != 1 || k.Bad != 1 || k.Interval != time.Minute {
		t.Errorf("kraken layout: %d candles, %d duplicates, %d bad, interval %v", len(k.Candles), k.Duplicates, k.Bad, k.Interval)
	}
	h, err := evaluation.Read("header", strings.NewReader(header))
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Candles) != 3 || h.Interval != 5*time.Minute || h.Candles[0].Close != 1 {
		t.Errorf("header layout, unsorted: %+v", h)
	}
	if _, err := evaluation.Read("short", strings.NewReader("1,1,1,1,1,1,1\n")); !errors.Is(err, evaluation.ErrTooShort) {
		t.Errorf("one candle: %v", err)
	}
}

// TestScoreVolCoverage checks coverage, terciles, days and the interval
// scores on rows built by hand: three days of one-minute rows whose
// returns fall inside the 80% interval on every fifth row but one.
func TestScoreVolCoverage(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var rows []evaluation.VolRow
	for i := range 3 * 1440 {
		ret := 0.0
		if i%5 == 0 {
			ret = 2 // outside [-1, 1] and inside [-3, 3]
		}
		rows = append(rows, evaluation.VolRow{Start: t0.Add(time.Duration(i) * time.Minute), Variance: 1, NaiveLast: 2, NaiveDay: 1,
			Regime: float64(i % 3), Return: ret, Realised: 1, Lower80: -1, Upper80: 1, Lower95: -3, Upper95: 3})
	}
	v, err := evaluation.ScoreVol(1, time.Minute, rows)
	if err != nil {
		t.Fatal(err)
	}
	if v.Cover80 != 0.8 || v.Cover95 != 1 {
		t.Errorf("coverage %v / %v, want 0.8 / 1", v.Cover80, v.Cover95)
	}
	if v.Days != 3 || v.Outside != 0 || v.Worst != 0.8 {
		t.Errorf("days %d outside %d worst %v", v.Days, v.Outside, v.Worst)
	}
	for i, c := range v.Tercile80 {
		if math.Abs(c-0.8) > 0.001 {
			t.Errorf("tercile %d covers %v", i, c)
		}
	}
	// QLIKE: the model is exact on the proxy, the last-window forecast is
	// twice it: 0.5 − ln 0.5 − 1.
	if v.QLIKE != 0 || math.Abs(v.QLIKELast-(0.5+math.Ln2-1)) > 1e-12 || v.Better != "day" {
		t.Errorf("QLIKE %v last %v better %s", v.QLIKE, v.QLIKELast, v.Better)
	}
	// Our 80% score: width 2 plus 10 per unit outside on a fifth of rows.
	if want := 2 + 0.2*10*1; math.Abs(v.Score80-want) > 1e-9 {
		t.Errorf("80%% interval score %v, want %v", v.Score80, want)
	}
	if v.FixedRows == 0 || v.FixedRows >= len(rows) {
		t.Errorf("the fixed rule scored %d rows: it needs a day of outcomes first", v.FixedRows)
	}
}

func TestReplaceSection(t *testing.T) {
	doc := "# x\n\n" + evaluation.BeginMarker + "\nold\n" + evaluation.EndMarker + "\ntail\n"
	got, err := evaluation.ReplaceSection(doc, "new\n")
	if err != nil || got != "# x\n\n"+evaluation.BeginMarker+"\nnew\n"+evaluation.EndMarker+"\ntail\n" {
		t.Errorf("%q %v", got, err)
	}
	if _, err := evaluation.ReplaceSection("# x\n", "new"); !errors.Is(err, evaluation.ErrNoMarkers) {
		t.Errorf("no markers: %v", err)
	}
}

// TestEvaluateRealFile runs the evaluation on the real 5-minute quarter
// and holds it to the 15-minute targets and to what README says of the
// point model: it does not beat no-change, and the rule never promotes it.
func TestEvaluateRealFile(t *testing.T) {
	f, err := evaluation.ReadFile(datatest.Path(t, datatest.KrakenXBTUSD5m))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := evaluation.Evaluate(f, evaluation.Options{Point: true, Rule: forecast.DefaultRule()})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range rep.Horizons {
		p := h.Point
		if p == nil {
			t.Fatalf("%d min: no point evaluation: %s", h.Minutes, h.PointErr)
		}
		if p.Rows == 0 || p.Decisions == 0 || p.Promoted != 0 || p.R2 >= 0 || !(p.Brier > 0) {
			t.Errorf("%d min: %+v", h.Minutes, *p)
		}
	}
	if len(rep.Horizons) != 2 || rep.Horizons[0].Minutes != 15 || rep.Horizons[1].Minutes != 60 {
		t.Fatalf("horizons %+v: 5-minute candles forecast 15 and 60 minutes", rep.Horizons)
	}
	for _, tg := range rep.Targets() {
		if strings.HasPrefix(tg.What, "15 min") && !tg.Met {
			t.Errorf("%s: want %s, got %s", tg.What, tg.Want, tg.Got)
		}
	}
	md := rep.Markdown()
	for _, want := range []string{"### kraken_XBTUSD_5m_2023Q1.csv", "| 15 min |", "| 60 min |", "interval score"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

// TestExactIntervalDailyCoverage backs what README says of the daily
// target: on a Gaussian random walk, the exact 80% interval (the true σ)
// still has its daily coverage of overlapping hour-long windows outside
// 70–90% on several percent of days, and of 15-minute windows on almost
// none: at 60 minutes a day holds only about 24 independent outcomes.
func TestExactIntervalDailyCoverage(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	const days = 1000
	outside := func(h int) float64 {
		n := days*1440 + h
		cum := make([]float64, n+1)
		for i := range n {
			cum[i+1] = cum[i] + rng.NormFloat64()
		}
		z := 1.2815515655446004 * math.Sqrt(float64(h))
		out := 0
		for d := range days {
			hit := 0
			for i := d * 1440; i < (d+1)*1440; i++ {
				if math.Abs(cum[i+h]-cum[i]) <= z {
					hit++
				}
			}
			if c := float64(hit) / 1440; c < 0.7 || c > 0.9 {
				out++
			}
		}
		return float64(out) / days
	}
	o15, o60 := outside(15), outside(60)
	t.Logf("days outside 70–90%%: %.1f%% at 15 min, %.1f%% at 60 min", 100*o15, 100*o60)
	if o15 > 0.01 || o60 < 0.04 || o60 > 0.10 {
		t.Errorf("exact interval: %.3f of days outside at 15 min, %.3f at 60 min", o15, o60)
	}
}

// TestHourIntervalsDailyCoverage holds the 60-minute 80% interval of the
// three-week Kraken 1-minute file to the daily target (at most 10% of days
// outside 70–90%) and the overall one: the file never looked at when the
// calibration was chosen (docs/models.md). With a day's window in three
// bins and ACI at 0.005 it had 5 of 19 days outside. Its interval score
// beats the fixed spread by 8% (5.9% with σ itself as the intervals'
// scale and no recent floor).
func TestHourIntervalsDailyCoverage(t *testing.T) {
	f, err := evaluation.ReadFile(datatest.Path(t, datatest.KrakenBTCUSD1m))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := evaluation.RunSeries(forecast.DefaultConfig(f.Interval), f.Candles)
	if err != nil {
		t.Fatal(err)
	}
	v, err := evaluation.ScoreVol(60, f.Interval, rows[60])
	if err != nil {
		t.Fatal(err)
	}
	if float64(v.Outside) > 0.1*float64(v.Days) || v.Cover80 < 0.78 || v.Cover80 > 0.82 || v.ScoreGain < 0.08 {
		t.Errorf("60 min: %d of %d days outside 70–90%%, %.1f%% covered overall, interval score %.2f%% better than the fixed spread", v.Outside, v.Days, 100*v.Cover80, 100*v.ScoreGain)
	}
}
