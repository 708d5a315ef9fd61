// Package predictor owns the live forecasts: it applies each series'
// champion model to every feature vector, publishes the prediction with its
// provenance to PREDICTIONS, scores it when the target candle's vector
// arrives, and keeps rolling live figures per model in Prometheus and in the
// registry. The champion is swapped in place when the registry changes.
// Forecast and scoring (Forecast, Scorer) are plain functions over plain
// values, so a backtest replays them without a server.
package predictor

import (
	"math"
	"time"

	"cryptostream/streams"
	"cryptostream/trainer"
)

// Forecast is the prediction the model bound to v's layout makes from v.
// z sizes the interval in held-out residual standard deviations.
func Forecast(rec streams.ModelRecord, b trainer.Bound, v streams.FeatureVector, z float64) streams.Prediction {
	lr := b.Predict(v.Values)
	half := z * rec.ResidualStd
	return streams.Prediction{
		Symbol: v.Symbol, Interval: v.Interval, Start: v.Start,
		Target:  v.Start.Add(time.Duration(rec.Horizon) * v.Interval.Duration()),
		Horizon: rec.Horizon, ModelID: rec.ID,
		Close: v.Close, LogReturn: lr, PredictedClose: v.Close * math.Exp(lr),
		Lower: v.Close * math.Exp(lr-half), Upper: v.Close * math.Exp(lr+half),
		CandleSeq: v.CandleSeq, Window: v.Window,
	}
}

// Score is one scored prediction.
type Score struct {
	ModelID   string
	Start     time.Time // of the prediction, which identifies it in its series
	Predicted float64   // log return
	Actual    float64   // log return
	AbsError  float64
	Hit       bool // same sign as a non-zero actual
	Moved     bool // the actual was not zero
}

// Scorer holds the predictions of one series that wait for their target and
// scores them as later vectors arrive. The price at a target with no candle
// (no trade) is the last close before it, as in the features.
type Scorer struct {
	pending   []streams.Prediction
	scores    []Score // Observe's result, reused
	lastStart time.Time
	lastClose float64
}

// NewScorer starts a scorer that has seen the vector at lastStart (zero:
// none) and waits for pending.
func NewScorer(lastStart time.Time, lastClose float64, pending []streams.Prediction) *Scorer {
	return &Scorer{pending: pending, lastStart: lastStart, lastClose: lastClose}
}

// Seen is the start of the newest vector observed.
func (s *Scorer) Seen() time.Time { return s.lastStart }

// Observe takes the next vector's start and close and returns the scores of
// the predictions whose target it reaches, valid until the next Observe (the
// per-candle path allocates nothing for them).
func (s *Scorer) Observe(start time.Time, close float64) []Score {
	out := s.scores[:0]
	keep := s.pending[:0]
	for _, p := range s.pending {
		if p.Target.After(start) {
			keep = append(keep, p)
			continue
		}
		price := close
		if p.Target.Before(start) {
			price = s.lastClose
		}
		actual := math.Log(price / p.Close)
		out = append(out, Score{
			ModelID: p.ModelID, Start: p.Start, Predicted: p.LogReturn, Actual: actual,
			AbsError: math.Abs(p.LogReturn - actual), Hit: p.LogReturn*actual > 0, Moved: actual != 0,
		})
	}
	clear(s.pending[len(keep):])
	s.pending = keep
	s.scores = out
	s.lastStart, s.lastClose = start, close
	return out
}

// Await adds a prediction to score later.
func (s *Scorer) Await(p streams.Prediction) { s.pending = append(s.pending, p) }

// Pending is how many predictions wait for their target.
func (s *Scorer) Pending() int { return len(s.pending) }

// Live is a model's rolling live figures over its last scores, kept as
// running sums so that a score and the figures cost the same whatever the
// window holds: the predictor reads them on every score.
type Live struct {
	size   int
	scores []Score
	next   int
	total  int
	// Running sums over scores, with the definitions of trainer.Evaluate.
	absSum, sqSum float64 // of |e| and e² (e = predicted − actual)
	aSum, a2Sum   float64 // of the actual and its square
	hits, moves   int
}

// NewLive keeps the last size scores.
func NewLive(size int) *Live { return &Live{size: size} }

// Add records a score.
func (l *Live) Add(s Score) {
	l.total++
	l.count(s, 1)
	if len(l.scores) < l.size {
		l.scores = append(l.scores, s)
		return
	}
	l.count(l.scores[l.next], -1)
	l.scores[l.next] = s
	l.next = (l.next + 1) % l.size
	if l.next == 0 {
		// Once per window, so that the running sums' rounding does not
		// build up.
		l.absSum, l.sqSum, l.aSum, l.a2Sum = 0, 0, 0, 0
		for _, s := range l.scores {
			e := s.Predicted - s.Actual
			l.absSum += math.Abs(e)
			l.sqSum += e * e
			l.aSum += s.Actual
			l.a2Sum += s.Actual * s.Actual
		}
	}
}

// count adds (sign 1) or removes (-1) a score from the running figures,
// with the definitions of trainer.Evaluate.
func (l *Live) count(s Score, sign int) {
	f := float64(sign)
	e := s.Predicted - s.Actual
	l.absSum += f * math.Abs(e)
	l.sqSum += f * e * e
	l.aSum += f * s.Actual
	l.a2Sum += f * s.Actual * s.Actual
	if s.Actual != 0 {
		l.moves += sign
		if s.Predicted*s.Actual > 0 {
			l.hits += sign
		}
	}
}

// Gauges are the window's mean absolute error and direction accuracy, as
// Metrics gives them.
func (l *Live) Gauges() (mae, hitRatio float64) {
	if len(l.scores) == 0 {
		return 0, 0
	}
	mae = l.absSum / float64(len(l.scores))
	if l.moves > 0 {
		hitRatio = float64(l.hits) / float64(l.moves)
	}
	return mae, hitRatio
}

// Metrics are the figures over the window, with the same definitions as the
// trainer's (trainer.Evaluate), so train, test and live compare; equal to
// Evaluate's to rounding, in constant time.
func (l *Live) Metrics() streams.Metrics {
	n := len(l.scores)
	if n == 0 {
		return streams.Metrics{}
	}
	fn := float64(n)
	m := streams.Metrics{N: n, MSE: max(l.sqSum, 0) / fn}
	m.MAE, m.DirectionAccuracy = l.Gauges()
	// Σ(a−ā)² from the sums: a window of equal actuals (Evaluate's zero,
	// no R²) leaves only rounding, which must not pass for a spread.
	if sst := l.a2Sum - l.aSum*l.aSum/fn; sst > 1e-12*l.a2Sum {
		m.R2 = 1 - max(l.sqSum, 0)/sst
	}
	return m
}

// HitRatio is the direction accuracy over the window.
func (l *Live) HitRatio() float64 { return l.Metrics().DirectionAccuracy }
