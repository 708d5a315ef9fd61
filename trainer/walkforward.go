package trainer

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/sajari/regression"

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
	// (the current champion) can be scored on exactly the same rows.
	TestRows []Row
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

// Decide is the promotion rule: a candidate becomes champion only if its
// held-out MSE is below the zero-return baseline's and below the current
// champion's on the same rows (championMSE < 0: there is none). The reason
// is logged and stored with the model.
func Decide(rep Report, championID string, championMSE float64) (bool, string) {
	switch {
	case rep.Test.MSE >= rep.BaselineZero.MSE:
		return false, fmt.Sprintf("not promoted: test MSE %.4g does not beat the zero-return baseline %.4g", rep.Test.MSE, rep.BaselineZero.MSE)
	case championMSE >= 0 && rep.Test.MSE >= championMSE:
		return false, fmt.Sprintf("not promoted: test MSE %.4g does not beat champion %s (%.4g on the same rows)", rep.Test.MSE, championID, championMSE)
	case championMSE >= 0:
		return true, fmt.Sprintf("promoted: test MSE %.4g beats the zero-return baseline %.4g and champion %s (%.4g)", rep.Test.MSE, rep.BaselineZero.MSE, championID, championMSE)
	}
	return true, fmt.Sprintf("promoted: test MSE %.4g beats the zero-return baseline %.4g; no champion before", rep.Test.MSE, rep.BaselineZero.MSE)
}

// Demote says whether the current champion, not replaced by the candidate,
// must step down: its MSE on the candidate's held-out rows no longer beats
// the zero-return baseline there. A champion is the best model that beats
// the baseline, or none; a stale one would publish forecasts worse than
// saying nothing.
func Demote(rep Report, championMSE float64) bool {
	return championMSE >= 0 && championMSE >= rep.BaselineZero.MSE
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
