package evaluation

import (
	"fmt"
	"math"
	"slices"
	"time"

	"cryptostream/forecast"
)

// VolRow is one scored forecast of one horizon.
type VolRow struct {
	Start                         time.Time
	Variance, NaiveLast, NaiveDay float64
	Regime                        float64
	Return, Realised              float64
	Lower80, Upper80              float64
	Lower95, Upper95              float64
	Model                         string
}

// RunSeries replays candles through a forecast.Series with no-change
// centers and returns the ready outcomes per horizon, in time order.
func RunSeries(cfg forecast.Config, candles []Candle) (map[int][]VolRow, error) {
	s, err := forecast.NewSeries(cfg)
	if err != nil {
		return nil, err
	}
	li80, li95 := slices.Index(cfg.Levels, 0.8), slices.Index(cfg.Levels, 0.95)
	if li80 < 0 || li95 < 0 {
		return nil, fmt.Errorf("evaluation: the levels must include 0.8 and 0.95, got %v", cfg.Levels)
	}
	out := map[int][]VolRow{}
	models := map[int]map[int64]string{}
	for _, h := range cfg.Horizons {
		models[h] = map[int64]string{}
	}
	for _, c := range candles {
		st, err := s.Add(c.Start, c.Close, nil)
		if err != nil {
			return nil, err
		}
		for _, f := range st.Forecasts {
			if f.Ready {
				models[f.Horizon][f.Start.Unix()] = f.Model
			}
		}
		for _, o := range st.Outcomes {
			if !o.Ready {
				continue
			}
			m, ok := models[o.Horizon][o.Start.Unix()]
			if !ok {
				continue // made at a carried-forward point or before ready
			}
			delete(models[o.Horizon], o.Start.Unix())
			out[o.Horizon] = append(out[o.Horizon], VolRow{Start: o.Start, Variance: o.Variance, NaiveLast: o.NaiveLast, NaiveDay: o.NaiveDay,
				Regime: o.Regime, Return: o.Return, Realised: o.Realised, Model: m,
				Lower80: o.Lower[li80], Upper80: o.Upper[li80], Lower95: o.Lower[li95], Upper95: o.Upper[li95]})
		}
	}
	return out, nil
}

// VolScore is the volatility forecast of one horizon against the naive
// ones, and its intervals.
type VolScore struct {
	Horizon int
	Rows    int
	// Excluded rows have a zero realised variance or a zero naive
	// forecast, where QLIKE is not finite.
	Excluded int
	// QLIKE on the realised variance (sum of squared interval returns)
	// and, as a check, on the squared horizon return.
	QLIKE, QLIKELast, QLIKEDay       float64
	QLIKESq, QLIKESqLast, QLIKESqDay float64
	MSEVar, MSEVarLast, MSEVarDay    float64
	// Better is the better naive forecast by QLIKE ("last" or "day"),
	// Gain the model's QLIKE reduction against it, DM the test.
	Better       string
	Gain, GainSq float64
	DM           forecast.DM
	// Coverage of the 80% and 95% intervals, overall and by tercile of
	// the trailing hour's variance (calm, middle, agitated).
	Cover80, Cover95 float64
	Tercile80        [3]float64
	Tercile95        [3]float64
	// Days counts the UTC days with at least half a day of rows; Outside
	// how many of them had an 80% coverage outside 70–90%; Worst the
	// lowest daily 80% coverage and its day.
	Days, Outside int
	Worst         float64
	WorstDay      string
	// Interval scores, ours and today's fixed-spread rule's (a normal z
	// times the RMS held-out error of the last three half-day folds,
	// refreshed daily), on the FixedRows rows the rule covers, the rule's
	// 80% coverage there, and our gain on the 80% score.
	Score80, Fixed80, FixedCover80 float64
	ScoreGain                      float64
	Score95, Fixed95               float64
	FixedRows                      int
}

const (
	z80 = 1.2815515655446004
	z95 = 1.959963984540054
)

// ScoreVol scores one horizon's rows.
func ScoreVol(h int, iv time.Duration, rows []VolRow) (VolScore, error) {
	vs := VolScore{Horizon: h, Rows: len(rows)}
	if len(rows) == 0 {
		return vs, fmt.Errorf("evaluation: no scored rows at horizon %d", h)
	}
	var dLast, dDay []float64
	var n, nsq int
	for _, r := range rows {
		vs.MSEVar += forecast.SquaredError(r.Variance, r.Realised)
		vs.MSEVarLast += forecast.SquaredError(r.NaiveLast, r.Realised)
		vs.MSEVarDay += forecast.SquaredError(r.NaiveDay, r.Realised)
		if r.Realised <= 0 || r.NaiveLast <= 0 || r.NaiveDay <= 0 || r.Variance <= 0 {
			vs.Excluded++
			continue
		}
		n++
		q, ql, qd := forecast.QLIKE(r.Variance, r.Realised), forecast.QLIKE(r.NaiveLast, r.Realised), forecast.QLIKE(r.NaiveDay, r.Realised)
		vs.QLIKE += q
		vs.QLIKELast += ql
		vs.QLIKEDay += qd
		dLast = append(dLast, q-ql)
		dDay = append(dDay, q-qd)
		if sq := r.Return * r.Return; sq > 0 {
			nsq++
			vs.QLIKESq += forecast.QLIKE(r.Variance, sq)
			vs.QLIKESqLast += forecast.QLIKE(r.NaiveLast, sq)
			vs.QLIKESqDay += forecast.QLIKE(r.NaiveDay, sq)
		}
	}
	k := float64(len(rows))
	vs.MSEVar, vs.MSEVarLast, vs.MSEVarDay = vs.MSEVar/k, vs.MSEVarLast/k, vs.MSEVarDay/k
	if n == 0 {
		return vs, fmt.Errorf("evaluation: no row with a positive realised variance at horizon %d", h)
	}
	fn, fsq := float64(n), float64(max(nsq, 1))
	vs.QLIKE, vs.QLIKELast, vs.QLIKEDay = vs.QLIKE/fn, vs.QLIKELast/fn, vs.QLIKEDay/fn
	vs.QLIKESq, vs.QLIKESqLast, vs.QLIKESqDay = vs.QLIKESq/fsq, vs.QLIKESqLast/fsq, vs.QLIKESqDay/fsq
	d, ref, refSq := dDay, vs.QLIKEDay, vs.QLIKESqDay
	vs.Better = "day"
	if vs.QLIKELast < vs.QLIKEDay {
		d, ref, refSq, vs.Better = dLast, vs.QLIKELast, vs.QLIKESqLast, "last"
	}
	vs.Gain = 1 - vs.QLIKE/ref
	vs.GainSq = 1 - vs.QLIKESq/refSq
	var err error
	if vs.DM, err = forecast.DieboldMariano(d, forecast.DMLag(len(d), h)); err != nil {
		return vs, err
	}

	// Coverage.
	in := func(r VolRow, lo, up float64) bool { return r.Return >= lo && r.Return <= up }
	regimes := make([]float64, len(rows))
	for i, r := range rows {
		regimes[i] = r.Regime
	}
	slices.Sort(regimes)
	cut1, cut2 := regimes[len(regimes)/3], regimes[2*len(regimes)/3]
	var t80, t95, tn [3]float64
	type day struct{ n, hit int }
	days := map[string]*day{}
	var order []string
	for _, r := range rows {
		c80, c95 := in(r, r.Lower80, r.Upper80), in(r, r.Lower95, r.Upper95)
		ti := 0
		if r.Regime >= cut2 {
			ti = 2
		} else if r.Regime >= cut1 {
			ti = 1
		}
		tn[ti]++
		if c80 {
			vs.Cover80++
			t80[ti]++
		}
		if c95 {
			vs.Cover95++
			t95[ti]++
		}
		key := r.Start.UTC().Format("2006-01-02")
		dd := days[key]
		if dd == nil {
			dd = &day{}
			days[key] = dd
			order = append(order, key)
		}
		dd.n++
		if c80 {
			dd.hit++
		}
	}
	vs.Cover80, vs.Cover95 = vs.Cover80/k, vs.Cover95/k
	for i := range 3 {
		vs.Tercile80[i], vs.Tercile95[i] = t80[i]/tn[i], t95[i]/tn[i]
	}
	perDay := int(24 * time.Hour / iv)
	vs.Worst = 1
	for _, key := range order {
		dd := days[key]
		if dd.n < perDay/2 {
			continue
		}
		vs.Days++
		c := float64(dd.hit) / float64(dd.n)
		if c < 0.7 || c > 0.9 {
			vs.Outside++
		}
		if c < vs.Worst {
			vs.Worst, vs.WorstDay = c, key
		}
	}
	// The interval scores compare on the rows the fixed rule covers.
	var ours80, ours95, nf float64
	for i, sg := range fixedSpread(rows, h, iv) {
		if math.IsNaN(sg) {
			continue
		}
		r := rows[i]
		nf++
		ours80 += forecast.IntervalScore(r.Lower80, r.Upper80, 0.8, r.Return)
		ours95 += forecast.IntervalScore(r.Lower95, r.Upper95, 0.95, r.Return)
		vs.Fixed80 += forecast.IntervalScore(-z80*sg, z80*sg, 0.8, r.Return)
		vs.Fixed95 += forecast.IntervalScore(-z95*sg, z95*sg, 0.95, r.Return)
		if math.Abs(r.Return) <= z80*sg {
			vs.FixedCover80++
		}
	}
	vs.FixedRows = int(nf)
	if nf > 0 {
		vs.Score80, vs.Score95 = ours80/nf, ours95/nf
		vs.Fixed80, vs.Fixed95, vs.FixedCover80 = vs.Fixed80/nf, vs.Fixed95/nf, vs.FixedCover80/nf
		vs.ScoreGain = 1 - vs.Score80/vs.Fixed80
	}
	return vs, nil
}

// fixedSpread is today's rule on the same rows, centred on no-change like
// ours: the half-width of the interval at level l is the normal quantile
// z(l) times the RMS error of the forecasts scored in the last 2,160 rows
// (three folds of 720) whose outcome was known at the last daily
// retraining. It returns that RMS per row, NaN before the first
// retraining with a fold of outcomes behind it.
func fixedSpread(rows []VolRow, h int, iv time.Duration) []float64 {
	const folds, every = 2160, 1440
	lag := time.Duration(h) * iv
	out := make([]float64, len(rows))
	sigma := math.NaN()
	known := 0 // rows[:known] have outcomes known at the refresh
	for i, r := range rows {
		if i%every == 0 {
			for known < i && !rows[known].Start.Add(lag).After(r.Start) {
				known++
			}
			if known >= folds/3 {
				var ss float64
				from := max(0, known-folds)
				for _, k := range rows[from:known] {
					ss += k.Return * k.Return
				}
				sigma = math.Sqrt(ss / float64(known-from))
			}
		}
		out[i] = sigma
	}
	return out
}
