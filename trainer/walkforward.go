package trainer

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/sajari/regression"

	"cryptostream/forecast"
	"cryptostream/streams"
)

// ErrNotEnoughData reports a series too short for the requested splits.
var ErrNotEnoughData = errors.New("trainer: not enough labelled rows")

// Split configures the walk-forward evaluation.
type Split struct {
	// Features the model uses; empty means every feature of the dataset.
	Features []string
	// TrainSize rows per fit. sajari/regression v1.0.1 builds the full
	// n-by-n Q of its QR decomposition and a string of every residual, so
	// its cost grows with the square of the rows: keep this in the low
	// thousands.
	TrainSize int
	// TestSize rows per fold, Folds folds, the last Folds*TestSize rows
	// being the held-out data.
	TestSize int
	Folds    int
	// Gap rows between the end of a fold's training rows and its test
	// rows; at least the horizon, so that no training label covers a
	// price inside the test period.
	Gap int
}

// DefaultSplit is two days of 1-minute rows per fit, three folds of half a
// day each.
func DefaultSplit() Split { return Split{TrainSize: 2880, TestSize: 720, Folds: 3, Gap: 5} }

// Report is a walk-forward evaluation and the model fitted on the latest
// rows.
type Report struct {
	Model Linear
	// ResidualStd is the standard deviation of the held-out errors, which
	// sizes the predictor's interval honestly (training residuals are too
	// small).
	ResidualStd float64
	// Train is the final model on its own training rows; Test, and the
	// baselines, are pooled over every fold's held-out rows.
	Train, Test, BaselineZero, BaselineLast streams.Metrics
	TrainFrom, TrainTo, TestFrom, TestTo    time.Time
	// TestRows are the held-out rows, in order, so that another model
	// (the current champion) can be scored on exactly the same rows;
	// TestPred the model's forecast of each, made by the fold's fit.
	TestRows []Row
	TestPred []float64
	Horizon  int
	// Folds are each fold's windows, for the audit of the gap.
	Folds []Fold
}

// Fold is the training and test window of one walk-forward step.
type Fold struct {
	TrainFrom, TrainTo, TestFrom, TestTo time.Time
}

// WalkForward evaluates the split on ds: for each fold it fits on the
// TrainSize rows that end Gap rows before the fold's test rows and predicts
// them; then it fits the model to keep on the latest TrainSize rows. That
// final model has seen the test rows: its held-out figures are those of the
// same procedure one step earlier, which is what walk-forward measures.
func WalkForward(ds Dataset, horizon int, sp Split) (Report, error) {
	if sp.TrainSize < 1 || sp.TestSize < 1 || sp.Folds < 1 {
		return Report{}, fmt.Errorf("trainer: split %+v", sp)
	}
	gap := max(sp.Gap, horizon)
	feats := sp.Features
	if len(feats) == 0 {
		feats = ds.Names
	}
	cols := make([]int, len(feats))
	for i, f := range feats {
		if cols[i] = slices.Index(ds.Names, f); cols[i] < 0 {
			return Report{}, fmt.Errorf("%w: %s", ErrFeatureMissing, f)
		}
	}
	n := len(ds.Rows)
	minTrain := 10 * (len(feats) + 1)
	testStart := n - sp.Folds*sp.TestSize
	if testStart-gap < minTrain {
		return Report{}, fmt.Errorf("%w: %d rows for %d folds of %d, a gap of %d and at least %d training rows", ErrNotEnoughData, n, sp.Folds, sp.TestSize, gap, minTrain)
	}
	rep := Report{Horizon: horizon}
	var pred, actual, zero, last []float64
	for k := range sp.Folds {
		from := testStart + k*sp.TestSize
		trainEnd := from - gap
		trainStart := max(0, trainEnd-sp.TrainSize)
		m, err := fit(ds.Rows[trainStart:trainEnd], feats, cols)
		if err != nil {
			return Report{}, fmt.Errorf("trainer: fold %d: %w", k, err)
		}
		rep.Folds = append(rep.Folds, Fold{
			TrainFrom: ds.Rows[trainStart].Start, TrainTo: ds.Rows[trainEnd-1].Start,
			TestFrom: ds.Rows[from].Start, TestTo: ds.Rows[from+sp.TestSize-1].Start,
		})
		b := Bound{coef: m.Coef, idx: cols}
		for _, r := range ds.Rows[from : from+sp.TestSize] {
			pred = append(pred, b.Predict(r.Values))
			actual = append(actual, r.Y)
			zero = append(zero, 0)
			last = append(last, r.Last)
		}
	}
	rep.TestRows = ds.Rows[testStart:]
	rep.TestPred = slices.Clone(pred)
	rep.TestFrom, rep.TestTo = rep.TestRows[0].Start, rep.TestRows[len(rep.TestRows)-1].Start
	rep.Test = Evaluate(pred, actual)
	rep.BaselineZero = Evaluate(zero, actual)
	rep.BaselineLast = Evaluate(last, actual)
	rep.ResidualStd = math.Sqrt(rep.Test.MSE)

	trainRows := ds.Rows[max(0, n-sp.TrainSize):]
	m, err := fit(trainRows, feats, cols)
	if err != nil {
		return Report{}, fmt.Errorf("trainer: final fit: %w", err)
	}
	rep.Model = m
	b := Bound{coef: m.Coef, idx: cols}
	pred, actual = pred[:0], actual[:0]
	for _, r := range trainRows {
		pred = append(pred, b.Predict(r.Values))
		actual = append(actual, r.Y)
	}
	rep.Train = Evaluate(pred, actual)
	rep.TrainFrom, rep.TrainTo = trainRows[0].Start, trainRows[len(trainRows)-1].Start
	return rep, nil
}

// fit runs ordinary least squares with sajari/regression. A column that is
// constant over the rows (the empty-interval fraction in a window with no
// gap, say) makes the QR factor singular, so it is left out of the fit and
// gets a zero coefficient.
func fit(rows []Row, feats []string, cols []int) (Linear, error) {
	var use []int
	for i, c := range cols {
		first := rows[0].Values[c]
		for _, r := range rows[1:] {
			if r.Values[c] != first {
				use = append(use, i)
				break
			}
		}
	}
	r := new(regression.Regression)
	r.SetObserved("log_return")
	for j, i := range use {
		r.SetVar(j, feats[i])
	}
	points := make(regression.DataPoints, 0, len(rows))
	for _, row := range rows {
		x := make([]float64, len(use))
		for j, i := range use {
			x[j] = row.Values[cols[i]]
		}
		points = append(points, regression.DataPoint(row.Y, x))
	}
	r.Train(points...)
	if err := r.Run(); err != nil {
		return Linear{}, fmt.Errorf("regression: %w", err)
	}
	got := r.GetCoeffs()
	coef := make([]float64, len(feats)+1)
	coef[0] = got[0]
	for j, i := range use {
		coef[i+1] = got[j+1]
	}
	for i, c := range coef {
		if math.IsNaN(c) || math.IsInf(c, 0) {
			return Linear{}, fmt.Errorf("regression: coefficient %d is %v (collinear features?)", i, c)
		}
	}
	return Linear{Features: slices.Clone(feats), Coef: coef}, nil
}

// Champion is the sitting champion as the promotion rule sees it.
type Champion struct {
	ID string
	// Model is nil when the champion cannot forecast the candidate's rows
	// (another horizon, or features the vectors no longer carry).
	Model   *Linear
	Horizon int
	// TrainTo is the start of the last row the champion's fit used.
	TrainTo time.Time
}

// Decision is what the trainer does with a candidate and the sitting
// champion, and why.
type Decision struct {
	Promote bool
	// Demote says the champion, not replaced, steps down.
	Demote  bool
	Reason  string
	Verdict forecast.Verdict
	// ChampionMSE and ChampionNoChangeMSE are the champion's and the
	// no-change forecast's MSE on the held-out rows the champion had not
	// seen (ChampionRows of them), the evidence of a demotion.
	ChampionMSE, ChampionNoChangeMSE float64
	ChampionRows                     int
}

// Decide applies rule to the best of tried candidates (rep, fitted on
// vectors laid out as names) and the sitting champion (nil: none), for
// candles of interval iv. The candidate is promoted only when the
// one-sided Diebold–Mariano tests against the no-change forecast and
// against the champion both pass after the correction for tried, with the
// rule's margin (forecast.Rule.Decide); the champion is judged only on the
// held-out rows after its own training window plus the horizon.
//
// A champion not replaced is demoted when, on at least rule.MinRows of
// those unseen rows, its MSE is no lower than the no-change forecast's: it
// has stopped beating saying nothing, and a forecast worse than no-change
// is not worth publishing. The bar to stay (a lower MSE) is deliberately
// below the bar to enter (a significant and margin-wide one), so that a
// real but modest champion is not flipped in and out by noise, while a
// chance winner, whose expected MSE is above no-change's, is removed at the
// first training with a day of rows it has not seen.
func Decide(rule forecast.Rule, rep Report, names []string, champ *Champion, tried int, iv time.Duration) (Decision, error) {
	if len(rep.TestPred) != len(rep.TestRows) {
		return Decision{}, fmt.Errorf("trainer: report of %d held-out rows with %d forecasts", len(rep.TestRows), len(rep.TestPred))
	}
	tr := forecast.Trial{Horizon: rep.Horizon, Interval: iv, Candidate: rep.TestPred, Tried: tried,
		Starts: make([]time.Time, len(rep.TestRows)), Actual: make([]float64, len(rep.TestRows))}
	for i, r := range rep.TestRows {
		tr.Starts[i], tr.Actual[i] = r.Start, r.Y
	}
	var note string
	if champ != nil {
		pred, err := champ.forecasts(rep, names)
		if err != nil {
			note = fmt.Sprintf("; champion %s cannot forecast these rows (%v): judged against no-change only", champ.ID, err)
		} else {
			tr.Champion, tr.ChampionTrainTo = pred, champ.TrainTo
		}
	}
	v, err := rule.Decide(tr)
	if err != nil {
		return Decision{}, fmt.Errorf("trainer: %w", err)
	}
	d := Decision{Promote: v.Promote, Reason: v.Reason + note, Verdict: v}
	if d.Promote || tr.Champion == nil {
		return d, nil
	}
	from := champ.TrainTo.Add(time.Duration(rep.Horizon) * iv)
	var sse, sseZero float64
	for i, a := range tr.Actual {
		if tr.Starts[i].Before(from) {
			continue
		}
		sse += forecast.SquaredError(tr.Champion[i], a)
		sseZero += a * a
		d.ChampionRows++
	}
	if d.ChampionRows < rule.MinRows {
		d.Reason += fmt.Sprintf("; champion %s kept: %d rows after its training window, fewer than %d to judge it on", champ.ID, d.ChampionRows, rule.MinRows)
		return d, nil
	}
	d.ChampionMSE, d.ChampionNoChangeMSE = sse/float64(d.ChampionRows), sseZero/float64(d.ChampionRows)
	if d.ChampionMSE >= d.ChampionNoChangeMSE {
		d.Demote = true
		d.Reason += fmt.Sprintf("; champion %s demoted: MSE %.4g on %d rows it had not seen is not below no-change's %.4g", champ.ID, d.ChampionMSE, d.ChampionRows, d.ChampionNoChangeMSE)
	} else {
		d.Reason += fmt.Sprintf("; champion %s kept: MSE %.4g on %d rows it had not seen, %.2f%% below no-change", champ.ID, d.ChampionMSE, d.ChampionRows, 100*(1-d.ChampionMSE/d.ChampionNoChangeMSE))
	}
	return d, nil
}

// forecasts are the champion's forecasts of the candidate's held-out rows.
func (c *Champion) forecasts(rep Report, names []string) ([]float64, error) {
	if c.Model == nil {
		return nil, errors.New("no model")
	}
	if c.Horizon != rep.Horizon {
		return nil, fmt.Errorf("horizon %d, not %d", c.Horizon, rep.Horizon)
	}
	b, err := c.Model.Bind(names)
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(rep.TestRows))
	for i, r := range rep.TestRows {
		out[i] = b.Predict(r.Values)
	}
	return out, nil
}

// Score is a model's MSE and metrics on rows, for comparing a champion with
// a candidate on the candidate's held-out rows.
func Score(m Linear, names []string, rows []Row) (streams.Metrics, error) {
	b, err := m.Bind(names)
	if err != nil {
		return streams.Metrics{}, err
	}
	pred := make([]float64, len(rows))
	actual := make([]float64, len(rows))
	for i, r := range rows {
		pred[i], actual[i] = b.Predict(r.Values), r.Y
	}
	return Evaluate(pred, actual), nil
}

// Search runs the walk-forward evaluation of sp for every candidate
// feature set (none: sp.Features alone) on the same rows and returns the
// report of the one with the lowest held-out MSE. Picking the best of
// len(sets) is the search the promotion rule must correct for: pass
// len(sets) to Decide as tried.
func Search(ds Dataset, horizon int, sp Split, sets [][]string) (Report, error) {
	if len(sets) == 0 {
		return WalkForward(ds, horizon, sp)
	}
	var best Report
	for i, f := range sets {
		one := sp
		one.Features = f
		rep, err := WalkForward(ds, horizon, one)
		if err != nil {
			return Report{}, fmt.Errorf("trainer: candidate %d: %w", i, err)
		}
		if i == 0 || rep.Test.MSE < best.Test.MSE {
			best = rep
		}
	}
	return best, nil
}
