package forecast

import (
	"fmt"
	"time"
)

// Rule is the promotion rule's settings. Its zero value is not useful:
// start from DefaultRule.
type Rule struct {
	// Alpha is the significance level of each one-sided Diebold–Mariano
	// test, after the correction for the number of candidates.
	Alpha float64
	// Margin is how much lower than the reference's the candidate's MSE
	// must be, as a fraction (0.005: 0.5% lower).
	Margin float64
	// MinRows is the fewest held-out rows a comparison is made on.
	MinRows int
}

// DefaultRule is p < 0.05 and an MSE at least 0.5% lower, on at least 500
// rows.
func DefaultRule() Rule { return Rule{Alpha: 0.05, Margin: 0.005, MinRows: 500} }

// Trial is what the rule is asked: may Candidate replace the sitting
// champion? Every slice has one entry per held-out row, in time order, the
// rows a walk-forward evaluation held out of the candidate's fit.
type Trial struct {
	Horizon int // in intervals
	// Interval is the candle interval, to place the champion's window.
	Interval time.Duration
	Starts   []time.Time
	Actual   []float64 // realised log return over the horizon
	// Candidate is the candidate's forecast on each row.
	Candidate []float64
	// Champion is the sitting champion's forecast on each row, nil when
	// there is none; ChampionTrainTo is the start of the last row its fit
	// used. Only rows starting at or after ChampionTrainTo plus the
	// horizon judge it: before that its training labels overlap them.
	Champion        []float64
	ChampionTrainTo time.Time
	// Tried counts every candidate that competed for this promotion (the
	// whole grid the candidate was picked from); the p-values are
	// corrected for it (Bonferroni).
	Tried int
}

// Verdict is the rule's answer and its evidence.
type Verdict struct {
	Promote bool
	Reason  string
	// VsNoChange and VsChampion are the tests on squared errors against
	// the no-change forecast (zero log return) and against the champion
	// (zero value: no champion); their P is before the correction,
	// AdjustedP after it.
	VsNoChange, VsChampion        DM
	AdjustedPNoChange             float64
	AdjustedPChampion             float64
	MSE, MSENoChange, MSEChampion float64
	// ChampionRows is how many rows judged the champion.
	ChampionRows int
}

// Decide applies the rule: promote only when the candidate beats the
// no-change forecast and the sitting champion each with a one-sided
// Diebold–Mariano p below Alpha after the Bonferroni correction for Tried,
// and has an MSE lower by Margin than each.
func (r Rule) Decide(t Trial) (Verdict, error) {
	n := len(t.Actual)
	if len(t.Candidate) != n || len(t.Starts) != n || (t.Champion != nil && len(t.Champion) != n) {
		return Verdict{}, fmt.Errorf("forecast: trial of %d rows with %d forecasts, %d starts and %d champion forecasts", n, len(t.Candidate), len(t.Starts), len(t.Champion))
	}
	if t.Horizon < 1 {
		return Verdict{}, fmt.Errorf("forecast: horizon %d", t.Horizon)
	}
	var v Verdict
	if n < r.MinRows {
		v.Reason = fmt.Sprintf("not promoted: %d held-out rows, fewer than %d", n, r.MinRows)
		return v, nil
	}
	d := make([]float64, n)
	var sse, sseZero float64
	for i, a := range t.Actual {
		e := SquaredError(t.Candidate[i], a)
		z := a * a
		sse += e
		sseZero += z
		d[i] = e - z
	}
	v.MSE, v.MSENoChange = sse/float64(n), sseZero/float64(n)
	var err error
	if v.VsNoChange, err = DieboldMariano(d, DMLag(n, t.Horizon)); err != nil {
		return v, err
	}
	v.AdjustedPNoChange = Bonferroni(v.VsNoChange.P, t.Tried)
	if v.AdjustedPNoChange >= r.Alpha {
		v.Reason = fmt.Sprintf("not promoted: against no-change DM %.2f, p %.3g (%.3g for %d candidates) is not below %g", v.VsNoChange.Stat, v.VsNoChange.P, v.AdjustedPNoChange, max(t.Tried, 1), r.Alpha)
		return v, nil
	}
	if v.MSE > (1-r.Margin)*v.MSENoChange {
		v.Reason = fmt.Sprintf("not promoted: MSE %.4g is not %.2f%% below no-change %.4g", v.MSE, 100*r.Margin, v.MSENoChange)
		return v, nil
	}
	if t.Champion == nil {
		v.Promote = true
		v.Reason = fmt.Sprintf("promoted: MSE %.4g, %.2f%% below no-change, DM %.2f, p %.3g for %d candidates; no champion before", v.MSE, 100*(1-v.MSE/v.MSENoChange), v.VsNoChange.Stat, v.AdjustedPNoChange, max(t.Tried, 1))
		return v, nil
	}
	from := t.ChampionTrainTo.Add(time.Duration(t.Horizon) * t.Interval)
	d = d[:0]
	var sseC, sseK float64
	for i, a := range t.Actual {
		if t.Starts[i].Before(from) {
			continue
		}
		e, c := SquaredError(t.Candidate[i], a), SquaredError(t.Champion[i], a)
		sseC += e
		sseK += c
		d = append(d, e-c)
	}
	v.ChampionRows = len(d)
	if len(d) < r.MinRows {
		v.Reason = fmt.Sprintf("not promoted: only %d rows after the champion's training window, fewer than %d", len(d), r.MinRows)
		return v, nil
	}
	v.MSEChampion = sseK / float64(len(d))
	if v.VsChampion, err = DieboldMariano(d, DMLag(len(d), t.Horizon)); err != nil {
		return v, err
	}
	v.AdjustedPChampion = Bonferroni(v.VsChampion.P, t.Tried)
	mseC := sseC / float64(len(d))
	switch {
	case v.AdjustedPChampion >= r.Alpha:
		v.Reason = fmt.Sprintf("not promoted: against the champion DM %.2f, p %.3g (%.3g for %d candidates) is not below %g", v.VsChampion.Stat, v.VsChampion.P, v.AdjustedPChampion, max(t.Tried, 1), r.Alpha)
	case mseC > (1-r.Margin)*v.MSEChampion:
		v.Reason = fmt.Sprintf("not promoted: MSE %.4g is not %.2f%% below the champion's %.4g on its %d unseen rows", mseC, 100*r.Margin, v.MSEChampion, len(d))
	default:
		v.Promote = true
		v.Reason = fmt.Sprintf("promoted: MSE %.4g, %.2f%% below no-change (DM %.2f, p %.3g) and %.2f%% below the champion on %d rows (DM %.2f, p %.3g), for %d candidates",
			v.MSE, 100*(1-v.MSE/v.MSENoChange), v.VsNoChange.Stat, v.AdjustedPNoChange, 100*(1-mseC/v.MSEChampion), len(d), v.VsChampion.Stat, v.AdjustedPChampion, max(t.Tried, 1))
	}
	return v, nil
}
