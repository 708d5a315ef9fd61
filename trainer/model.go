// Package trainer owns the models: the dataset built from feature vectors,
// the linear regression fitted on walk-forward splits and judged against the
// naive baselines, the promotion rule, and the worker that trains on jobs and
// on a schedule, storing every model in the registry. The maths (Dataset,
// WalkForward, Linear, Decide) never touches NATS, so the backtester and the
// predictor score exactly what was trained.
package trainer

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"cryptostream/streams"
)

// ErrFeatureMissing reports a vector without a feature the model needs.
var ErrFeatureMissing = errors.New("trainer: feature missing from vector")

// Linear is a fitted model: Coef[0] is the intercept, Coef[i+1] weighs
// Features[i]. It predicts the log return over the horizon.
type Linear struct {
	Features []string
	Coef     []float64
}

// FromRecord is the model a registry record describes.
func FromRecord(rec streams.ModelRecord) (Linear, error) {
	if len(rec.Coefficients) != len(rec.Features)+1 {
		return Linear{}, fmt.Errorf("trainer: model %s has %d coefficients for %d features", rec.ID, len(rec.Coefficients), len(rec.Features))
	}
	return Linear{Features: rec.Features, Coef: rec.Coefficients}, nil
}

// Bound is a model bound to one vector layout, so that prediction is a dot
// product without name lookups.
type Bound struct {
	coef []float64
	idx  []int
}

// Bind maps the model's features to positions in names.
func (m Linear) Bind(names []string) (Bound, error) {
	idx := make([]int, len(m.Features))
	for i, f := range m.Features {
		j := slices.Index(names, f)
		if j < 0 {
			return Bound{}, fmt.Errorf("%w: %s", ErrFeatureMissing, f)
		}
		idx[i] = j
	}
	return Bound{coef: m.Coef, idx: idx}, nil
}

// Predict is the forecast log return for one vector's values.
func (b Bound) Predict(values []float64) float64 {
	p := b.coef[0]
	for i, j := range b.idx {
		p += b.coef[i+1] * values[j]
	}
	return p
}

// Predict binds and predicts in one step.
func (m Linear) Predict(names []string, values []float64) (float64, error) {
	b, err := m.Bind(names)
	if err != nil {
		return 0, err
	}
	return b.Predict(values), nil
}

// Row is one training example: the vector at Start, the log return realised
// over the horizon after it (Y), and the log return over the horizon before
// it (Last), which the carry-forward baseline predicts.
type Row struct {
	Start  time.Time
	Close  float64
	Values []float64
	Y      float64
	Last   float64
}

// Dataset is the rows of one series with the names of their values.
type Dataset struct {
	Names []string
	Rows  []Row
}

// BuildDataset labels vectors (one series, any order, duplicates allowed)
// with the log return over horizon intervals. The price at an instant is the
// close of the last vector at or before it, as in the features; a row is
// labelled only once a vector at or after its target exists, so an
// unfinished horizon never becomes a label, and only when the price a
// horizon before it is known, so both baselines score the same rows.
func BuildDataset(vectors []streams.FeatureVector, horizon int) (Dataset, error) {
	if horizon < 1 {
		return Dataset{}, fmt.Errorf("trainer: horizon %d", horizon)
	}
	vs := slices.Clone(vectors)
	slices.SortStableFunc(vs, func(a, b streams.FeatureVector) int { return a.Start.Compare(b.Start) })
	vs = slices.CompactFunc(vs, func(a, b streams.FeatureVector) bool { return a.Start.Equal(b.Start) })
	if len(vs) == 0 {
		return Dataset{}, nil
	}
	names := vs[0].Names
	for _, v := range vs {
		if !slices.Equal(v.Names, names) {
			return Dataset{}, fmt.Errorf("trainer: feature set changed at %s", v.Start.Format(time.RFC3339))
		}
	}
	step := vs[0].Interval.Duration() * time.Duration(horizon)
	// priceAt returns the close of the last vector at or before t, and
	// whether one exists.
	priceAt := func(t time.Time) (float64, bool) {
		i, found := slices.BinarySearchFunc(vs, t, func(v streams.FeatureVector, t time.Time) int { return v.Start.Compare(t) })
		if found {
			return vs[i].Close, true
		}
		if i == 0 {
			return 0, false
		}
		return vs[i-1].Close, true
	}
	lastStart := vs[len(vs)-1].Start
	ds := Dataset{Names: names}
	for _, v := range vs {
		target := v.Start.Add(step)
		if target.After(lastStart) {
			break
		}
		before, ok := priceAt(v.Start.Add(-step))
		if !ok {
			continue
		}
		after, _ := priceAt(target)
		ds.Rows = append(ds.Rows, Row{Start: v.Start, Close: v.Close, Values: v.Values,
			Y: math.Log(after / v.Close), Last: math.Log(v.Close / before)})
	}
	return ds, nil
}

// Evaluate scores predictions against actual log returns. R² is against the
// mean of the actuals of the same split; direction accuracy counts a hit
// when the prediction has the sign of a non-zero actual, so a zero forecast
// calls no direction and never hits.
func Evaluate(pred, actual []float64) streams.Metrics {
	n := len(actual)
	if n == 0 {
		return streams.Metrics{}
	}
	var mean float64
	for _, a := range actual {
		mean += a
	}
	mean /= float64(n)
	var sse, sst, sae float64
	hits, moves := 0, 0
	for i, a := range actual {
		e := pred[i] - a
		sse += e * e
		sae += math.Abs(e)
		sst += (a - mean) * (a - mean)
		if a != 0 {
			moves++
			if pred[i]*a > 0 {
				hits++
			}
		}
	}
	m := streams.Metrics{N: n, MSE: sse / float64(n), MAE: sae / float64(n)}
	if sst > 0 {
		m.R2 = 1 - sse/sst
	}
	if moves > 0 {
		m.DirectionAccuracy = float64(hits) / float64(moves)
	}
	return m
}
