package predictor

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gonum.org/v1/gonum/stat/distuv"

	"cryptostream/forecast"
	"cryptostream/streams"
)

// DefaultHorizons are the forecast horizons when none are configured.
var DefaultHorizons = []time.Duration{time.Minute, 15 * time.Minute, time.Hour}

// SeedCandle is one closed candle of history that warms a series'
// volatility model: its start and close.
type SeedCandle struct {
	Start time.Time
	Close float64
}

// Seeder gives the history of a series that its stream does not hold: the
// closed candles starting before before, oldest first. The demo's seeder
// is the embedded recording krakensim replays.
type Seeder interface {
	Seed(symbol string, iv streams.Interval, before time.Time) []SeedCandle
}

// forecastConfig is the volatility model of series of interval iv at the
// horizons that are whole numbers of intervals (one interval when none is).
func forecastConfig(iv streams.Interval, horizons []time.Duration) forecast.Config {
	d := iv.Duration()
	cfg := forecast.DefaultConfig(d)
	cfg.Horizons = nil
	for _, h := range horizons {
		if h >= d && h%d == 0 && h <= 24*time.Hour {
			cfg.Horizons = append(cfg.Horizons, int(h/d))
		}
	}
	slices.Sort(cfg.Horizons)
	cfg.Horizons = slices.Compact(cfg.Horizons)
	if len(cfg.Horizons) == 0 {
		cfg.Horizons = []int{1}
	}
	return cfg
}

// seriesForecast is one series' volatility model and live scores.
type seriesForecast struct {
	symbol   string
	interval streams.Interval
	cfg      forecast.Config
	fc       *forecast.Series
	centers  []float64
	scores   []*liveScore // per horizon, in cfg.Horizons' order
	unflush  int
	seeded   int
}

func newSeriesForecast(symbol string, iv streams.Interval, horizons []time.Duration) (*seriesForecast, error) {
	cfg := forecastConfig(iv, horizons)
	fc, err := forecast.NewSeries(cfg)
	if err != nil {
		return nil, fmt.Errorf("predictor: volatility model of %s %s: %w", symbol, iv, err)
	}
	s := &seriesForecast{symbol: symbol, interval: iv, cfg: cfg, fc: fc, centers: make([]float64, len(cfg.Horizons))}
	day := max(1, int(24*time.Hour/iv.Duration()))
	for range cfg.Horizons {
		s.scores = append(s.scores, newLiveScore(cfg.Levels, iv.Duration(), day))
	}
	return s, nil
}

// horizonIndex is the position of horizon h, -1 when it is not forecast.
func (s *seriesForecast) horizonIndex(h int) int { return slices.Index(s.cfg.Horizons, h) }

// add feeds the next closed candle with the point forecast center at
// horizon index k (k < 0: no-change everywhere) and scores the outcomes it
// completes.
func (s *seriesForecast) add(start time.Time, close float64, k int, center float64) (forecast.Step, error) {
	clear(s.centers)
	if k >= 0 {
		s.centers[k] = center
	}
	st, err := s.fc.Add(start, close, s.centers)
	if err != nil {
		return st, err
	}
	if st.Restarted {
		for _, sc := range s.scores {
			sc.restart()
		}
	}
	for _, o := range st.Outcomes {
		if i := s.horizonIndex(o.Horizon); i >= 0 && o.Ready {
			s.scores[i].add(o, s.cfg.Interval)
		}
	}
	return st, nil
}

// predictionParts holds the parts of a prediction for the usual numbers
// of horizons, levels and hops, so that the prediction and its parts are
// one allocation: one is made on every candle, and a backtest keeps them
// all. More than these spill to arrays of their own.
type predictionParts struct {
	forecasts [3]streams.HorizonForecast
	intervals [6]streams.ForecastInterval
	coverages [6]float64
	// Three hops are a live candle's trace with the features' and this
	// stage's; four made the block 1,176 bytes, past the 1,152-byte size
	// class into the 1,280 one.
	hops [3]streams.Hop
}

// within is the first n of buf when they fit, else a new slice of n; its
// capacity is n, so that an append never runs into a neighbour's part.
func within[T any](buf []T, n int) []T {
	if n <= len(buf) {
		return buf[:n:n]
	}
	return make([]T, n)
}

// stamp is t.Stamp(stage, at) in parts' hops when they fit (nil parts:
// none do).
func (parts *predictionParts) stamp(t streams.Trace, stage string, at time.Time) streams.Trace {
	if parts == nil {
		return t.Stamp(stage, at)
	}
	return t.StampIn(parts.hops[:], stage, at)
}

// prediction is the event of one closed candle: every horizon's forecast
// from step, the champion's at horizon index k (k < 0: none) with model id
// id, its parts in parts when they fit (nil: arrays of their own). The
// primary horizon is the champion's, else the first.
func prediction(v streams.FeatureVector, fs []forecast.Forecast, k int, id string, parts *predictionParts) streams.Prediction {
	var fbuf []streams.HorizonForecast
	var ibuf []streams.ForecastInterval
	var cbuf []float64
	if parts != nil {
		fbuf, ibuf, cbuf = parts.forecasts[:], parts.intervals[:], parts.coverages[:]
	}
	p := streams.Prediction{Symbol: v.Symbol, Interval: v.Interval, Start: v.Start, Close: v.Close,
		CandleSeq: v.CandleSeq, Window: v.Window, Forecasts: within(fbuf, len(fs))}
	n := 0
	for _, f := range fs {
		if f.Ready {
			n += len(f.Intervals)
		}
	}
	intervals, coverages := within(ibuf, n), within(cbuf, n)
	for i, f := range fs {
		hf := streams.HorizonForecast{Horizon: f.Horizon, Target: f.Target, Model: streams.ModelNoChange, ModelID: streams.ModelNoChange,
			LogReturn: f.Center, PredictedClose: v.Close * math.Exp(f.Center), Ready: f.Ready}
		if i == k {
			hf.Model, hf.ModelID = streams.ModelLinear, id
		}
		if f.Ready {
			hf.Sigma, hf.VolatilityModel = f.Sigma, f.Model
			hf.Intervals, intervals = intervals[:len(f.Intervals):len(f.Intervals)], intervals[len(f.Intervals):]
			for j, in := range f.Intervals {
				fi := streams.ForecastInterval{Level: in.Level, Lower: v.Close * math.Exp(in.Lower), Upper: v.Close * math.Exp(in.Upper), Covered: in.Covered}
				// exp rounds: keep the point forecast inside its interval.
				fi.Lower, fi.Upper = min(fi.Lower, hf.PredictedClose), max(fi.Upper, hf.PredictedClose)
				if !math.IsNaN(in.Coverage) {
					coverages[j] = in.Coverage
					fi.Coverage = &coverages[j]
				}
				hf.Intervals[j] = fi
			}
			coverages = coverages[len(f.Intervals):]
		}
		p.Forecasts[i] = hf
	}
	primary := p.Forecasts[max(k, 0)]
	p.Target, p.Horizon, p.Model, p.ModelID = primary.Target, primary.Horizon, primary.Model, primary.ModelID
	p.LogReturn, p.PredictedClose, p.Sigma = primary.LogReturn, primary.PredictedClose, primary.Sigma
	p.Lower, p.Upper = p.PredictedClose, p.PredictedClose
	if n := len(primary.Intervals); n > 0 {
		widest := primary.Intervals[0]
		for _, in := range primary.Intervals[1:] {
			if in.Level > widest.Level {
				widest = in
			}
		}
		p.Lower, p.Upper = widest.Lower, widest.Upper
	}
	return p
}

// centersOf reads back the point forecasts a stored prediction was made
// with, so that a warm-up replays the calibration exactly as it went live.
// It returns the horizon index of the champion's forecast and its center.
func (s *seriesForecast) centerOf(p *streams.Prediction) (int, float64) {
	if p == nil {
		return -1, 0
	}
	for _, f := range p.Forecasts {
		if f.Model != streams.ModelNoChange && f.Model != "" {
			return s.horizonIndex(f.Horizon), f.LogReturn
		}
	}
	if len(p.Forecasts) == 0 && p.ModelID != streams.ModelNoChange {
		// Made before forecasts had horizons: the champion's only.
		return s.horizonIndex(p.Horizon), p.LogReturn
	}
	return -1, 0
}

// tally is the sum of the scores of a set of outcomes.
type tally struct {
	n                   int
	hits                [maxLevels]int
	sse, sseZero        float64
	nq                  int
	qModel, qLast, qDay float64
	brier, brierClim    float64
	ups                 int
}

// maxLevels bounds the interval levels scored per horizon.
const maxLevels = 4

func (t *tally) merge(o *tally, sign int) {
	f := float64(sign)
	t.n += sign * o.n
	for i := range t.hits {
		t.hits[i] += sign * o.hits[i]
	}
	t.sse += f * o.sse
	t.sseZero += f * o.sseZero
	t.nq += sign * o.nq
	t.qModel += f * o.qModel
	t.qLast += f * o.qLast
	t.qDay += f * o.qDay
	t.brier += f * o.brier
	t.brierClim += f * o.brierClim
	t.ups += sign * o.ups
}

// liveScore is one horizon's rolling scores, by the hour of the outcomes'
// targets: a day's and a week's totals kept in constant time per outcome.
type liveScore struct {
	levels  []float64
	iv      time.Duration
	day     int // intervals in a day: the "model failing" minimum
	buckets [weekHours]tally
	hours   [weekHours]int64 // the hour each bucket holds, -1 empty
	cur     int64            // newest hour seen
	dayT    tally
	weekT   tally
}

const weekHours = 7 * 24

func newLiveScore(levels []float64, iv time.Duration, day int) *liveScore {
	s := &liveScore{levels: levels[:min(len(levels), maxLevels)], iv: iv, day: day}
	s.restart()
	return s
}

func (s *liveScore) restart() {
	s.buckets = [weekHours]tally{}
	for i := range s.hours {
		s.hours[i] = -1
	}
	s.cur = math.MinInt64
	s.dayT, s.weekT = tally{}, tally{}
}

// advance moves the windows to hour h, dropping what leaves them.
func (s *liveScore) advance(h int64) {
	if s.cur == math.MinInt64 || h-s.cur >= weekHours {
		// First outcome, or a gap longer than the week: all has left.
		s.restart()
		s.cur = h
		return
	}
	for s.cur < h {
		s.cur++
		if i := mod(s.cur-24, weekHours); s.hours[i] == s.cur-24 {
			s.dayT.merge(&s.buckets[i], -1)
		}
		// The bucket of the hour a week ago is reused for this one.
		if i := mod(s.cur, weekHours); s.hours[i] >= 0 {
			s.weekT.merge(&s.buckets[i], -1)
			s.buckets[i], s.hours[i] = tally{}, -1
		}
	}
}

func mod(a, n int64) int {
	m := a % n
	if m < 0 {
		m += n
	}
	return int(m)
}

var unitNormal = distuv.UnitNormal

// add scores one outcome.
func (s *liveScore) add(o forecast.Outcome, iv time.Duration) {
	target := o.Start.Add(time.Duration(o.Horizon) * iv)
	h := target.Unix() / 3600
	if h < s.cur {
		return // out of order: cannot happen for one series
	}
	s.advance(h)
	i := mod(h, weekHours)
	s.hours[i] = h
	var t tally
	t.n = 1
	for j := range s.levels {
		if j < len(o.Lower) && o.Return >= o.Lower[j] && o.Return <= o.Upper[j] {
			t.hits[j] = 1
		}
	}
	t.sse = forecast.SquaredError(o.Center, o.Return)
	t.sseZero = o.Return * o.Return
	if o.Realised > 0 && o.Variance > 0 && o.NaiveLast > 0 && o.NaiveDay > 0 {
		t.nq = 1
		t.qModel = forecast.QLIKE(o.Variance, o.Realised)
		t.qLast = forecast.QLIKE(o.NaiveLast, o.Realised)
		t.qDay = forecast.QLIKE(o.NaiveDay, o.Realised)
	}
	up := o.Return > 0
	pUp := 0.5
	if o.Variance > 0 {
		pUp = unitNormal.CDF(o.Center / math.Sqrt(o.Variance))
	}
	clim := 0.5
	if s.weekT.n > 0 {
		clim = float64(s.weekT.ups) / float64(s.weekT.n)
	}
	t.brier, t.brierClim = forecast.Brier(pUp, up), forecast.Brier(clim, up)
	if up {
		t.ups = 1
	}
	s.buckets[i].merge(&t, 1)
	s.dayT.merge(&t, 1)
	s.weekT.merge(&t, 1)
}

func (s *liveScore) window(t *tally) streams.ScoreWindow {
	w := streams.ScoreWindow{N: t.n, QLIKEN: t.nq, Coverage: make([]streams.LevelCoverage, len(s.levels))}
	for j, l := range s.levels {
		w.Coverage[j].Level = l
		if t.n > 0 {
			w.Coverage[j].Coverage = float64(t.hits[j]) / float64(t.n)
		}
	}
	if t.n > 0 {
		n := float64(t.n)
		w.MSE, w.MSENoChange = t.sse/n, t.sseZero/n
		w.Brier, w.BrierClimatology = t.brier/n, t.brierClim/n
	}
	if t.nq > 0 {
		n := float64(t.nq)
		w.QLIKE, w.QLIKENaiveLast, w.QLIKENaiveDay = t.qModel/n, t.qLast/n, t.qDay/n
	}
	return w
}

// Failing bounds: the 80% interval's week coverage outside them, over at
// least a day of outcomes, is the "model failing" condition.
const (
	failingLevel = 0.8
	failingLow   = 0.75
	failingHigh  = 0.85
)

// score is the horizon's figures.
func (s *liveScore) score(h int) streams.HorizonScore {
	hs := streams.HorizonScore{Horizon: h, Day: s.window(&s.dayT), Week: s.window(&s.weekT)}
	hs.Failing, hs.FailingReason = s.failing()
	return hs
}

// failing is the "model failing" condition and why, alone: every
// prediction carries it, so it must cost no more than a division.
func (s *liveScore) failing() (bool, string) {
	j := slices.Index(s.levels, failingLevel)
	if j < 0 || s.weekT.n < s.day {
		return false, ""
	}
	c := float64(s.weekT.hits[j]) / float64(s.weekT.n)
	if c >= failingLow && c <= failingHigh {
		return false, ""
	}
	return true, "the 80% interval covered " + strconv.FormatFloat(100*c, 'f', 1, 64) + "% of the last 7 days' " +
		strconv.Itoa(s.weekT.n) + " outcomes, outside 75-85%"
}

// markFailing gives each horizon of p the live score's failing condition
// as of now.
func (s *seriesForecast) markFailing(p *streams.Prediction) {
	for i := range p.Forecasts {
		f := &p.Forecasts[i]
		if k := s.horizonIndex(f.Horizon); k >= 0 {
			f.Failing, f.FailingReason = s.scores[k].failing()
		}
	}
}

// record is the series' live scores for the registry.
func (s *seriesForecast) record(now time.Time) streams.ForecastScore {
	r := streams.ForecastScore{Schema: streams.Schema{V: streams.SchemaVersion}, Symbol: s.symbol, Interval: s.interval, UpdatedAt: now.UTC()}
	for i, h := range s.cfg.Horizons {
		r.Horizons = append(r.Horizons, s.scores[i].score(h))
	}
	return r
}

// forecastCollector exports the live forecast scores when Prometheus
// scrapes, so the per-candle path pays nothing for them.
type forecastCollector struct{ p *Predictions }

var (
	series3          = []string{"symbol", "interval", "horizon"}
	descOutcomes     = prometheus.NewDesc("cryptostream_predictor_forecast_outcomes", "Forecasts scored against their target's close over the trailing window of targets (day or week).", append(series3, "window"), nil)
	descCoverage     = prometheus.NewDesc("cryptostream_predictor_forecast_coverage_ratio", "Share of the window's outcomes inside the interval of the nominal level.", append(series3, "level", "window"), nil)
	descMSE          = prometheus.NewDesc("cryptostream_predictor_forecast_mse", "Mean squared error of the log return forecast: the published point forecast (point) and no-change (no_change) on the same outcomes.", append(series3, "forecast", "window"), nil)
	descQLIKE        = prometheus.NewDesc("cryptostream_predictor_forecast_qlike", "Mean QLIKE loss of the variance forecast (volatility) and the naive ones (naive_last: the last horizon's realised variance; naive_day: the trailing day's), over the outcomes that moved.", append(series3, "forecast", "window"), nil)
	descBrier        = prometheus.NewDesc("cryptostream_predictor_forecast_brier", "Brier score of the up-move probability the forecast implies (point) and of climatology.", append(series3, "forecast", "window"), nil)
	descFailing      = prometheus.NewDesc("cryptostream_predictor_forecast_failing", "1 when the 80% interval covered outside 75-85% over the last 7 days (at least a day of outcomes): the model failing condition.", series3, nil)
	scoreWindowNames = [2]string{"1d", "7d"}
)

func (c forecastCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descOutcomes, descCoverage, descMSE, descQLIKE, descBrier, descFailing} {
		ch <- d
	}
}

func (c forecastCollector) Collect(ch chan<- prometheus.Metric) {
	c.p.mu.Lock()
	recs := make([]streams.ForecastScore, 0, len(c.p.forecasts))
	for _, sf := range c.p.forecasts {
		recs = append(recs, sf.record(c.p.now()))
	}
	c.p.mu.Unlock()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, r := range recs {
		for _, h := range r.Horizons {
			base := []string{r.Symbol, r.Interval.String(), strconv.Itoa(h.Horizon)}
			l := func(extra ...string) []string { return append(slices.Clone(base), extra...) }
			for i, w := range [2]streams.ScoreWindow{h.Day, h.Week} {
				win := scoreWindowNames[i]
				g(descOutcomes, float64(w.N), l(win)...)
				if w.N == 0 {
					continue
				}
				for _, cv := range w.Coverage {
					g(descCoverage, cv.Coverage, l(strconv.FormatFloat(cv.Level, 'g', -1, 64), win)...)
				}
				g(descMSE, w.MSE, l("point", win)...)
				g(descMSE, w.MSENoChange, l("no_change", win)...)
				g(descBrier, w.Brier, l("point", win)...)
				g(descBrier, w.BrierClimatology, l("climatology", win)...)
				if w.QLIKEN > 0 {
					g(descQLIKE, w.QLIKE, l("volatility", win)...)
					g(descQLIKE, w.QLIKENaiveLast, l("naive_last", win)...)
					g(descQLIKE, w.QLIKENaiveDay, l("naive_day", win)...)
				}
			}
			failing := 0.0
			if h.Failing {
				failing = 1
			}
			g(descFailing, failing, base...)
		}
	}
}
