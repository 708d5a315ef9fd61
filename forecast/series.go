package forecast

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"gonum.org/v1/gonum/stat/distuv"
)

// Errors of Series.Add.
var (
	// ErrNotAfter is a candle that does not start after the last one: a
	// duplicate or a late candle, which would rewrite what was forecast.
	ErrNotAfter = errors.New("forecast: candle does not start after the last one")
	// ErrBadClose is a close that is not a positive finite price.
	ErrBadClose = errors.New("forecast: close is not a positive finite price")
	// ErrOffGrid is a candle whose start is not on the interval grid of
	// the series.
	ErrOffGrid = errors.New("forecast: candle start is off the interval grid")
)

// Config is the forecast of one series. Its zero value is not useful:
// start from DefaultConfig.
type Config struct {
	// Interval is the candle interval.
	Interval time.Duration
	// Horizons are the forecast horizons, in intervals.
	Horizons []int
	// Levels are the nominal coverages of the intervals.
	Levels []float64
	// EWMAHalfLives and HARRecent (the recent window of the log-HAR) are
	// in intervals, Ridge the log-HAR penalties: one candidate each, the
	// forecast published being the candidate with the lowest trailing
	// QLIKE (SelectHalfLife intervals) on the forecasts already scored.
	EWMAHalfLives  []int
	HARRecent      []int
	Ridge          []float64
	SelectHalfLife int
	// Pooled, one per horizon in Horizons' order, publishes instead the
	// pooled forecast: the geometric mean of every EWMA and log-HAR
	// candidate's. Picking the best by a trailing loss chases the noise of
	// that loss; at an hour, where a day scores only 24 independent
	// outcomes, pooling forecasts better (docs/models.md).
	Pooled []bool
	// HARMinSpan is the shortest span, in intervals, the log-HAR is
	// regressed on (see har).
	HARMinSpan int
	// Memory is the half-life, in intervals, of the log-HAR's rows.
	Memory int
	// RefitEvery is how often, in intervals, the log-HAR is solved.
	RefitEvery int
	// ProfileBuckets divide the day for the time-of-day profile, whose
	// buckets forget with a half-life of ProfileHalfLifeDays and count
	// once every one has ProfileMinDays days of data. ProfileCap caps
	// what one interval adds to its bucket, |r| over the trailing day's
	// RMS return (3; 0 is no cap), so that the hours of a crash do not set
	// the time-of-day shape for weeks after it.
	ProfileBuckets      int
	ProfileHalfLifeDays float64
	ProfileMinDays      int
	ProfileCap          float64
	// Calibration is the fewest recent standardised errors per horizon and
	// regime the conformal multiplier is read from; CalibrationHorizons
	// lengthens the window of a long horizon to hold that many whole
	// horizons of outcomes, since the outcomes of overlapping horizons are
	// not independent: a day of 60-minute outcomes is only 24 independent
	// ones, too few for a stable 80% quantile. RegimeBins split the
	// forecasts by the trailing hour's variance, at its quantiles over the
	// last Calibration forecasts, each bin with its own calibration
	// (Mondrian conformal prediction); 1 is one calibration per horizon.
	// ACISteps, one per horizon in Horizons' order, are adaptive conformal
	// inference's step per horizon of outcomes: the outcomes of overlapping
	// horizons are one piece of news told h times, so each moves the level
	// by step/h. docs/models.md says how the defaults were chosen.
	Calibration         int
	CalibrationHorizons int
	RegimeBins          int
	ACISteps            []float64
	// ACIFloor keeps each ACI's working miscoverage at or above this share
	// of the nominal one (0.45: 0.09 for the 80% interval, 0.0225 for 95%),
	// so that a run of misses never has the multiplier read past that
	// quantile of the window's scores; 0 is ACI's own bound of −0.25.
	ACIFloor float64
	// IntervalPower and RecentFloor shape a pooled horizon's intervals
	// (docs/models.md, "Compressed intervals with a floor at the recent
	// level"); the published variance is the pool's. The intervals are
	// q·σ^IntervalPower wide, the conformal scores |r|/σ^IntervalPower
	// (0.7; 0 is σ itself): across forecasts a higher σ comes with a
	// smaller |r|/σ, since the highest forecasts are the overshoots after a
	// spike, so σ alone spreads the intervals too far apart. RecentFloor
	// keeps the σ² of that scale at or above that many times the
	// deseasonalised variance of the log-HAR's longest recent window (15
	// minutes) times the horizon's seasonal length (1; 0 is none), so that
	// a crash's first minutes widen the interval at once, where the pool of
	// slower candidates takes most of an hour.
	IntervalPower float64
	RecentFloor   float64
	// CoverageWindow is how many recent outcomes the measured coverage of
	// each interval is over.
	CoverageWindow int
	// Warmup is how many intervals pass before forecasts are Ready.
	Warmup int
	// MaxGap is the longest gap, in intervals, carried forward as flat
	// prices (minutes without trades); a longer one (an outage) restarts
	// the series.
	MaxGap int
}

// DefaultConfig is the forecast of a series of candles of interval iv at
// horizons of 1, 15 and 60 minutes (those that are whole numbers of
// intervals). Windows are set in time and converted to intervals.
func DefaultConfig(iv time.Duration) Config {
	n := func(d time.Duration) int { return max(1, int(d/iv)) }
	var hs []int
	var steps []float64
	var pooled []bool
	for _, m := range []time.Duration{time.Minute, 15 * time.Minute, time.Hour} {
		if m >= iv && m%iv == 0 {
			hs = append(hs, int(m/iv))
			// Faster at an hour, where a day holds 24 outcomes and a
			// trending day would otherwise be over before the level moved.
			step := 0.005
			if m == time.Hour {
				step = 0.05
			}
			steps = append(steps, step)
			pooled = append(pooled, m == time.Hour)
		}
	}
	day := n(24 * time.Hour)
	recent := []int{n(5 * time.Minute)}
	if r := n(15 * time.Minute); r != recent[0] {
		recent = append(recent, r)
	}
	return Config{
		Interval: iv, Horizons: hs, Levels: []float64{0.8, 0.95},
		EWMAHalfLives:  []int{n(30 * time.Minute), n(2 * time.Hour), n(8 * time.Hour)},
		HARRecent:      recent,
		Ridge:          []float64{1e-4, 0.1},
		SelectHalfLife: 2 * day, Pooled: pooled,
		HARMinSpan:     n(15 * time.Minute),
		Memory:         14 * day,
		RefitEvery:     n(time.Hour),
		ProfileBuckets: 48, ProfileHalfLifeDays: 10, ProfileMinDays: 2, ProfileCap: 3,
		Calibration: day, CalibrationHorizons: 192, RegimeBins: 1, ACISteps: steps, ACIFloor: 0.45,
		IntervalPower: 0.7, RecentFloor: 1, CoverageWindow: day,
		Warmup: 2 * day, MaxGap: day,
	}
}

// Validate rejects a configuration that cannot run.
func (c Config) Validate() error {
	day := int(24 * time.Hour / max(c.Interval, 1))
	switch {
	case c.Interval <= 0 || c.Interval > 24*time.Hour:
		return fmt.Errorf("forecast: interval %v", c.Interval)
	case len(c.Horizons) == 0 || len(c.Levels) == 0:
		return errors.New("forecast: no horizons or no levels")
	case len(c.EWMAHalfLives) == 0 || len(c.HARRecent) == 0 || len(c.Ridge) == 0:
		return errors.New("forecast: every candidate list needs an entry")
	case c.Calibration < 10 || c.CoverageWindow < 1 || c.RefitEvery < 1 || c.Memory < 1 || c.MaxGap < 1:
		return fmt.Errorf("forecast: calibration %d, coverage window %d, refit %d, memory %d, max gap %d", c.Calibration, c.CoverageWindow, c.RefitEvery, c.Memory, c.MaxGap)
	case c.RegimeBins < 1 || c.RegimeBins > 10:
		return fmt.Errorf("forecast: %d regime bins", c.RegimeBins)
	case len(c.ACISteps) != len(c.Horizons):
		return fmt.Errorf("forecast: %d ACI steps for %d horizons", len(c.ACISteps), len(c.Horizons))
	case c.Pooled != nil && len(c.Pooled) != len(c.Horizons):
		return fmt.Errorf("forecast: %d pooled flags for %d horizons", len(c.Pooled), len(c.Horizons))
	case c.CalibrationHorizons < 0:
		return fmt.Errorf("forecast: calibration horizons %d", c.CalibrationHorizons)
	case !(c.ProfileCap >= 0):
		return fmt.Errorf("forecast: profile cap %v (0 for none, or above 0)", c.ProfileCap)
	case !(c.ACIFloor >= 0 && c.ACIFloor < 1):
		return fmt.Errorf("forecast: ACI floor %v (0 to below 1)", c.ACIFloor)
	case !(c.IntervalPower >= 0 && c.IntervalPower <= 1):
		return fmt.Errorf("forecast: interval power %v (0 for σ, or up to 1)", c.IntervalPower)
	case !(c.RecentFloor >= 0) || math.IsInf(c.RecentFloor, 0):
		return fmt.Errorf("forecast: recent floor %v", c.RecentFloor)
	}
	for _, g := range c.ACISteps {
		if g < 0 || g > 0.5 {
			return fmt.Errorf("forecast: ACI step %v", g)
		}
	}
	for _, h := range c.Horizons {
		if h < 1 || h > day {
			return fmt.Errorf("forecast: horizon %d intervals (1 to a day)", h)
		}
	}
	for _, l := range c.Levels {
		if !(l > 0 && l < 1) {
			return fmt.Errorf("forecast: level %v", l)
		}
	}
	for _, r := range c.HARRecent {
		if r < 1 || r > day {
			return fmt.Errorf("forecast: HAR recent window %d", r)
		}
	}
	for _, r := range c.Ridge {
		if r < 0 {
			return fmt.Errorf("forecast: ridge %v", r)
		}
	}
	return nil
}

// CalibrationWindow is how many standardised errors the conformal
// multiplier of horizon h (intervals) is read from.
func (c Config) CalibrationWindow(h int) int { return max(c.Calibration, c.CalibrationHorizons*h) }

// History is how many intervals of history bring a new series to where a
// running one would be: the warm-up, the longest calibration window
// filled, and the longest horizon for its outcomes. A restarted predictor
// replays that much, as does a backtest before its range.
func (c Config) History() int {
	var w, hmax int
	for _, h := range c.Horizons {
		w, hmax = max(w, c.CalibrationWindow(h)), max(hmax, h)
	}
	return c.Warmup + w + hmax
}

// Interval is one forecast interval of the log return over the horizon.
type Interval struct {
	// Level is the nominal coverage (0.8); Coverage the share of the last
	// Covered outcomes of this horizon's interval at this level that fell
	// inside it (NaN before any).
	Level    float64
	Coverage float64
	Covered  int
	// Lower and Upper bound the log return: Center ∓ Multiplier·Sigma.
	Lower, Upper float64
	Multiplier   float64
}

// Forecast is what a Series says at one candle about one horizon.
type Forecast struct {
	Horizon int // intervals
	Start   time.Time
	Target  time.Time
	// Center is the point forecast of the log return the intervals are
	// built around (the caller's: the champion's, or 0 for no-change).
	Center float64
	// Sigma is the forecast standard deviation of the log return over
	// the horizon; Variance its square.
	Sigma, Variance float64
	// Model names the volatility candidate published.
	Model string
	// NaiveLast and NaiveDay are the naive variance forecasts of the
	// horizon: the last horizon's realised variance, and the trailing
	// day's variance per interval times the horizon.
	NaiveLast, NaiveDay float64
	// Regime is the trailing hour's variance per interval, a model-free
	// measure of how agitated the market is at Start.
	Regime    float64
	Intervals []Interval
	// Ready is false during the warm-up, while the estimates still stand
	// on too little history to be published.
	Ready bool
}

// Outcome is a forecast made Horizon intervals ago whose target has now
// closed, with what happened.
type Outcome struct {
	Horizon             int
	Start               time.Time
	Center, Variance    float64
	NaiveLast, NaiveDay float64
	Regime              float64
	Ready               bool
	// Return is the realised log return over the horizon; Realised the
	// sum of its intervals' squared log returns (the realised variance).
	Return, Realised float64
	// Lower and Upper are the intervals issued, one per level.
	Lower, Upper []float64
	at           int // offset of the bounds in Series.bounds
}

// Step is what one Add produced. Its slices are the series' own and valid
// until the next Add: copy what you keep.
type Step struct {
	Forecasts []Forecast
	Outcomes  []Outcome
	// Filled counts the grid points before the candle that had none and
	// were carried forward flat; Restarted reports a gap past MaxGap,
	// after which the series starts over.
	Filled    int
	Restarted bool
}

// horizon is the per-horizon state.
type horizon struct {
	h int
	// hars is the log-HAR of the horizon's span, shared with every other
	// horizon of that span.
	hars *harGroup
	raw  windowSum // realised variance over the last h intervals
	// pending forecasts by origin t mod (h+1)
	pend    []pending
	lowers  []float64 // (h+1) * levels
	uppers  []float64
	cands   int
	candVar []float64 // (h+1) * cands
	// candLog holds, on a pooled horizon, the logs the pool took of the
	// candidates before the combined one, like candVar: its score needs
	// the same logs again h intervals later.
	candLog   []float64
	loss      []ewMean       // trailing selection loss per candidate
	cal       []*Calibration // per regime bin
	aci       [][]ACI        // per regime bin, per level
	hits      []hitWindow
	intervals []Interval
	pooled    bool
	// power is the exponent of σ in the intervals' scale: IntervalPower on
	// a pooled horizon, 1 elsewhere.
	power float64
	// slot is t mod (h+1), the ring index of the forecast made at t,
	// counted rather than divided for.
	slot int
}

// next moves the horizon's ring index on by one grid point.
func (hz *horizon) next() {
	if hz.slot++; hz.slot > hz.h {
		hz.slot = 0
	}
}

// harGroup is the log-HAR regressions of one span, one per recent window.
// Their rows, outcomes and fits depend on the span alone, not on the
// horizon, so horizons of one span (at one minute, 1 and 15 minutes, both
// regressed on 15) share one group: one learn, one solve and one exp per
// candidate instead of one per horizon, the same values.
type harGroup struct {
	span  int
	uSpan windowSum // deseasonalised variance over the last span intervals
	har   []*har
	// row is t mod (span+1), the ring index of the rows made at t,
	// counted rather than divided for.
	row int
	// levels is every har's fitted level per ridge (har-major) at the
	// newest grid point, before the horizon's seasonal factor.
	levels []float64
	// floors is the log floor each row used, the same for every har of
	// the group, so the regressand's log is taken once for all of them.
	floors []float64
}

func (g *harGroup) next() {
	if g.row++; g.row > g.span {
		g.row = 0
	}
}

type pending struct {
	valid                       bool
	ready                       bool
	start                       time.Time
	center, variance            float64
	scale                       float64 // what the intervals were in units of: σ, or σ^IntervalPower
	naiveLast, naiveDay, regime float64
	bin                         int
	// published: made at a real candle, so its outcome is reported;
	// one made at a carried-forward point only feeds the estimates.
	published bool
}

// Series forecasts one series. Not safe for concurrent use: one per series
// and goroutine, as the stage runner gives.
type Series struct {
	cfg         Config
	ivSec       int64
	day, hour   int
	names       []string
	fallbackZ   []float64
	t           int // grid points since the start, the newest being t
	started     bool
	lastUnix    int64
	r           float64 // the newest interval's log return
	closes      ring
	raw, u      ring
	dayRaw      windowSum
	dayU, hourU windowSum
	hourRaw     windowSum
	recU        []windowSum
	ewma        []ewMean
	prof        profile
	hz          []*horizon
	hars        []*harGroup
	x           [][harDim]float64 // regressors at t per recent window
	longest     int               // the longest recent window's index, RecentFloor's
	floor       float64
	forecasts   []Forecast
	outcomes    []Outcome
	bounds      []float64 // the outcomes' interval bounds, lower then upper
	// regimes holds the trailing hour's variance at the last forecasts,
	// whose quantiles cut the regime bins (the same for every horizon).
	regimes *Calibration
}

// NewSeries validates cfg and returns an empty series.
func NewSeries(cfg Config) (*Series, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Series{cfg: cfg, ivSec: int64(cfg.Interval / time.Second)}
	s.day = max(1, int(24*time.Hour/cfg.Interval))
	s.hour = max(1, int(time.Hour/cfg.Interval))
	for _, hl := range cfg.EWMAHalfLives {
		s.names = append(s.names, "ewma-"+strconv.Itoa(hl))
	}
	for _, r := range cfg.HARRecent {
		for _, l := range cfg.Ridge {
			s.names = append(s.names, "har-"+strconv.Itoa(r)+"-"+strconv.FormatFloat(l, 'g', 3, 64))
		}
	}
	s.names = append(s.names, "combined", "pooled")
	for _, l := range cfg.Levels {
		s.fallbackZ = append(s.fallbackZ, distuv.UnitNormal.Quantile(0.5+l/2))
	}
	s.reset()
	return s, nil
}

func (s *Series) reset() {
	cfg := s.cfg
	maxH := 0
	for _, h := range cfg.Horizons {
		maxH = max(maxH, h)
	}
	s.t, s.started = 0, false
	s.closes = newRing(maxH + 1)
	s.raw, s.u = newRing(s.day+1), newRing(s.day+1)
	s.dayRaw, s.dayU = windowSum{n: s.day}, windowSum{n: s.day}
	s.hourU, s.hourRaw = windowSum{n: s.hour}, windowSum{n: s.hour}
	s.recU = make([]windowSum, len(cfg.HARRecent))
	for i, r := range cfg.HARRecent {
		s.recU[i] = windowSum{n: r}
	}
	s.ewma = make([]ewMean, len(cfg.EWMAHalfLives))
	for i, hl := range cfg.EWMAHalfLives {
		s.ewma[i] = newEWMean(float64(hl))
	}
	s.prof = newProfile(cfg.ProfileBuckets, cfg.Interval, cfg.ProfileHalfLifeDays, cfg.ProfileMinDays, cfg.ProfileCap)
	s.x = make([][harDim]float64, len(cfg.HARRecent))
	s.longest = 0
	for i, r := range cfg.HARRecent {
		if r > cfg.HARRecent[s.longest] {
			s.longest = i
		}
	}
	s.regimes = NewCalibration(cfg.Calibration)
	s.hz, s.hars = s.hz[:0], s.hars[:0]
	s.forecasts = s.forecasts[:0]
	nl := len(cfg.Levels)
	for k, h := range cfg.Horizons {
		span := max(h, cfg.HARMinSpan)
		hz := &horizon{h: h, hars: s.harGroup(span), raw: windowSum{n: h},
			pend: make([]pending, h+1), lowers: make([]float64, (h+1)*nl), uppers: make([]float64, (h+1)*nl),
			cands: len(s.names), candVar: make([]float64, (h+1)*len(s.names)), loss: make([]ewMean, len(s.names)),
			intervals: make([]Interval, nl), pooled: k < len(cfg.Pooled) && cfg.Pooled[k]}
		hz.power = 1
		if hz.pooled {
			hz.candLog = make([]float64, (h+1)*len(s.names))
			if cfg.IntervalPower > 0 {
				hz.power = cfg.IntervalPower
			}
		}
		for range cfg.RegimeBins {
			hz.cal = append(hz.cal, NewCalibration(cfg.CalibrationWindow(h)))
			var a []ACI
			for _, l := range cfg.Levels {
				ac := NewACI(l, cfg.ACISteps[k]/float64(h))
				if cfg.ACIFloor > 0 {
					ac.Min = cfg.ACIFloor * (1 - l)
				}
				a = append(a, ac)
			}
			hz.aci = append(hz.aci, a)
		}
		for i := range hz.loss {
			hz.loss[i] = newEWMean(float64(cfg.SelectHalfLife))
		}
		for range cfg.Levels {
			hz.hits = append(hz.hits, newHitWindow(cfg.CoverageWindow))
		}
		s.hz = append(s.hz, hz)
		s.forecasts = append(s.forecasts, Forecast{Horizon: h, Intervals: hz.intervals})
	}
}

// harGroup is the group of log-HARs of the span, made on first use.
func (s *Series) harGroup(span int) *harGroup {
	for _, g := range s.hars {
		if g.span == span {
			return g
		}
	}
	cfg := s.cfg
	g := &harGroup{span: span, uSpan: windowSum{n: span}, levels: make([]float64, len(cfg.HARRecent)*len(cfg.Ridge)),
		floors: make([]float64, span+1)}
	for i := range cfg.HARRecent {
		g.har = append(g.har, newHAR(span, i, cfg.Ridge, float64(cfg.Memory)))
	}
	s.hars = append(s.hars, g)
	return g
}

// Names lists the volatility candidates, as Forecast.Model names them.
func (s *Series) Names() []string { return s.names }

// Add takes the next closed candle's start and close and returns the
// forecasts made at it and the outcomes of the forecasts whose target it
// is. centers holds the point forecast of the log return per horizon (in
// Config.Horizons' order) that the intervals are built around; nil is the
// no-change forecast. Grid points with no candle before start are carried
// forward at the last close, as the features do.
func (s *Series) Add(start time.Time, close float64, centers []float64) (Step, error) {
	if !(close > 0) || math.IsInf(close, 0) {
		return Step{}, fmt.Errorf("%w: %v", ErrBadClose, close)
	}
	unix := start.Unix()
	if s.ivSec > 0 && unix%s.ivSec != 0 {
		return Step{}, fmt.Errorf("%w: %s", ErrOffGrid, start.UTC().Format(time.RFC3339))
	}
	var st Step
	s.outcomes, s.bounds = s.outcomes[:0], s.bounds[:0]
	if s.started {
		if unix <= s.lastUnix {
			return Step{}, fmt.Errorf("%w: %s", ErrNotAfter, start.UTC().Format(time.RFC3339))
		}
		gap := int((unix-s.lastUnix)/s.ivSec) - 1
		if gap > s.cfg.MaxGap {
			s.reset()
			st.Restarted = true
		} else {
			last := s.closes.at(0)
			for range gap {
				s.advance(s.lastUnix+s.ivSec, last, nil, false)
			}
			st.Filled = gap
		}
	}
	s.advance(unix, close, centers, true)
	// The bounds are copied as the outcomes come, since a later grid
	// point of the same gap may reuse a forecast's slot.
	nl := len(s.cfg.Levels)
	for i := range s.outcomes {
		o := &s.outcomes[i]
		o.Lower, o.Upper = s.bounds[o.at:o.at+nl], s.bounds[o.at+nl:o.at+2*nl]
	}
	st.Forecasts, st.Outcomes = s.forecasts, s.outcomes
	return st, nil
}

// advance moves the series one grid point on: the outcomes it completes,
// the estimates it updates, the forecasts made at it. Only a real candle
// (emit) returns its forecasts; a carried-forward point still forecasts,
// so that every later point has its outcome to score.
func (s *Series) advance(unix int64, close float64, centers []float64, emit bool) {
	if !s.started {
		s.started, s.lastUnix = true, unix
		s.closes.push(close)
		s.forecast(unix, centers, emit)
		return
	}
	s.t++
	r := math.Log(close / s.closes.at(0))
	s.r = r
	s.closes.push(close)
	s.lastUnix = unix
	r2 := r * r

	// The interval's own update, using only what came before it.
	b := s.prof.bucket(unix)
	if d := s.dayRaw.mean(&s.raw); d > 0 {
		s.prof.observe(b, math.Abs(r)/math.Sqrt(d))
	}
	u := r2 / s.prof.s[b]
	s.raw.push(r2)
	s.u.push(u)
	s.dayRaw.update(&s.raw)
	s.hourRaw.update(&s.raw)
	s.dayU.update(&s.u)
	s.hourU.update(&s.u)
	for i := range s.recU {
		s.recU[i].update(&s.u)
	}
	for i := range s.ewma {
		s.ewma[i].add(u)
	}
	dayEnd, refit := s.t%s.day == 0, s.t%s.cfg.RefitEvery == 0
	if dayEnd {
		s.dayRaw.recompute(&s.raw)
		s.hourRaw.recompute(&s.raw)
		s.dayU.recompute(&s.u)
		s.hourU.recompute(&s.u)
		for i := range s.recU {
			s.recU[i].recompute(&s.u)
		}
	}
	for _, hz := range s.hz {
		hz.next()
		hz.raw.update(&s.raw)
		if dayEnd {
			hz.raw.recompute(&s.raw)
		}
		s.score(hz)
	}
	for _, g := range s.hars {
		g.next()
		g.uSpan.update(&s.u)
		if dayEnd {
			g.uSpan.recompute(&s.u)
		}
		// The row made span points ago: (t-span) mod (span+1).
		learnt := g.row + 1
		if learnt > g.span {
			learnt = 0
		}
		if s.t >= g.span && s.t-g.span >= s.hour {
			outcome := g.uSpan.sum / float64(g.span)
			y := math.Log(outcome + g.floors[learnt])
			for _, m := range g.har {
				m.learn(learnt, outcome, y)
			}
		}
		if refit {
			for _, m := range g.har {
				if m.weight >= float64(s.day)/4 {
					m.solve()
				}
			}
		}
	}
	s.forecast(unix, centers, emit)
}

// score takes the outcome of the forecast made h intervals ago.
func (s *Series) score(hz *horizon) {
	if s.t < hz.h {
		return
	}
	// The forecast made at t-h: (t-h) mod (h+1) is (t+1) mod (h+1).
	slot := hz.slot + 1
	if slot > hz.h {
		slot = 0
	}
	p := &hz.pend[slot]
	if !p.valid {
		return
	}
	p.valid = false
	ret := s.r // the same quotient's log at one interval
	if hz.h != 1 {
		ret = math.Log(s.closes.at(0) / s.closes.at(hz.h))
	}
	rv := hz.raw.sum
	logged := 0 // candidates whose log the pool took
	if hz.pooled {
		logged = hz.cands - 2
	}
	cv := hz.candVar[slot*hz.cands : (slot+1)*hz.cands]
	ls := hz.loss[:len(cv)]
	var logs []float64
	if logged > 0 {
		logs = hz.candLog[slot*hz.cands : slot*hz.cands+logged]
	}
	for c, f := range cv {
		if f > 0 {
			var lf float64
			if c < len(logs) {
				lf = logs[c]
			} else {
				lf = math.Log(f)
			}
			ls[c].add(rv/f + lf)
		}
	}
	nl := len(s.cfg.Levels)
	lo, up := hz.lowers[slot*nl:(slot+1)*nl], hz.uppers[slot*nl:(slot+1)*nl]
	if p.variance > 0 {
		aci := hz.aci[p.bin]
		for i := range aci {
			missed := ret < lo[i] || ret > up[i]
			aci[i].Observe(missed)
			hz.hits[i].add(!missed)
		}
		hz.cal[p.bin].Add(math.Abs(ret-p.center) / p.scale)
	}
	if p.published {
		s.outcomes = append(s.outcomes, Outcome{
			Horizon: hz.h, Start: p.start, Center: p.center, Variance: p.variance,
			NaiveLast: p.naiveLast, NaiveDay: p.naiveDay, Regime: p.regime, Ready: p.ready,
			Return: ret, Realised: rv, at: len(s.bounds),
		})
		s.bounds = append(append(s.bounds, lo...), up...)
	}
}

// forecast makes every horizon's forecast at grid point t.
func (s *Series) forecast(unix int64, centers []float64, emit bool) {
	dayMean := s.dayU.mean(&s.u)
	s.floor = 1e-3 * dayMean
	// The day's and the hour's regressors are every recent window's.
	logDay, logHour := math.Log(dayMean+s.floor), math.Log(s.hourU.mean(&s.u)+s.floor)
	for i := range s.recU {
		x := &s.x[i]
		x[0] = 1
		x[1] = logDay
		x[2] = logHour
		x[3] = math.Log(s.recU[i].mean(&s.u) + s.floor)
	}
	ready := s.t >= s.cfg.Warmup
	regime := s.hourRaw.mean(&s.raw)
	bin := 0
	for b := 1; b < s.cfg.RegimeBins; b++ {
		if regime > s.regimes.At(float64(b)/float64(s.cfg.RegimeBins)) {
			bin = b
		}
	}
	if s.cfg.RegimeBins > 1 {
		s.regimes.Add(regime) // one bin reads no cut points
	}
	for _, g := range s.hars {
		c := 0
		row := g.row
		g.floors[row] = s.floor
		for i, m := range g.har {
			x := m.slot(row)
			*x = s.x[i]
			for j := range m.ridges {
				if m.fitted[j] {
					g.levels[c] = m.level(j, row, x)
				}
				c++
			}
		}
	}
	start := time.Unix(unix, 0).UTC()
	nl := len(s.cfg.Levels)
	for k, hz := range s.hz {
		slot := hz.slot
		season := s.prof.forward(unix, s.ivSec, hz.h)
		cv := hz.candVar[slot*hz.cands : (slot+1)*hz.cands]
		ne := len(s.ewma)
		for i := range s.ewma {
			cv[i] = s.ewma[i].v * season
		}
		c := ne
		levels := hz.hars.levels
		for _, m := range hz.hars.har {
			for j := range m.ridges {
				if m.fitted[j] {
					cv[c] = levels[c-ne] * season
				} else {
					cv[c] = cv[1%ne] // the middle EWMA until the regression has rows
				}
				c++
			}
		}
		be, bh := s.best(hz, 0, 1, ne), s.best(hz, ne, ne+1, c)
		cv[c] = (cv[be] + cv[bh]) / 2
		// The scan of every candidate goes through be after the EWMAs:
		// carry on from there.
		sel := s.best(hz, be, ne, c+1)
		// The pool is left at zero (never scored) where it is not
		// published: its logs are the cost of a pool.
		cv[c+1] = 0
		logVar := math.NaN() // the published variance's log, when the pool took it
		if hz.pooled {
			var lg float64
			logs := hz.candLog[slot*hz.cands : slot*hz.cands+c]
			for i, v := range cv[:c] {
				logs[i] = math.Log(v)
				lg += logs[i]
			}
			if v := math.Exp(lg / float64(c)); v > 0 && !math.IsInf(v, 0) {
				cv[c+1], sel, logVar = v, c+1, lg/float64(c)
			}
		}
		variance := cv[sel]
		// The intervals' variance: the published one, or the recent
		// floor where it is higher. The floor leaves the published
		// variance alone, since QLIKE judges it over every hour, not at
		// a crash's onset: raising it there lost 2-4.5 points of QLIKE
		// and changed no interval.
		ivar := variance
		if hz.pooled && s.cfg.RecentFloor > 0 {
			if f := s.cfg.RecentFloor * s.recU[s.longest].mean(&s.u) * season; f > variance {
				ivar, logVar = f, math.NaN()
			}
		}

		center := 0.0
		if centers != nil {
			center = centers[k]
		}
		sigma := math.Sqrt(variance)
		scale := sigma
		switch {
		case !(ivar > 0):
		case hz.power != 1:
			if math.IsNaN(logVar) {
				logVar = math.Log(ivar)
			}
			scale = math.Exp(hz.power / 2 * logVar)
		case ivar != variance:
			scale = math.Sqrt(ivar)
		}
		cal := hz.cal[bin]
		p := &hz.pend[slot]
		*p = pending{valid: variance > 0 && s.t > 0, ready: ready, start: start, center: center, variance: variance, scale: scale,
			naiveLast: hz.raw.sum, naiveDay: s.dayRaw.mean(&s.raw) * float64(hz.h), regime: regime, bin: bin, published: emit}
		lo, up := hz.lowers[slot*nl:(slot+1)*nl], hz.uppers[slot*nl:(slot+1)*nl]
		for i := range hz.intervals {
			// The multiplier is published per σ, whatever the scale the
			// scores were read in.
			q := cal.Quantile(hz.aci[bin][i].Alpha())
			if math.IsNaN(q) || cal.Len() < 10 {
				q = s.fallbackZ[i]
			} else if scale != sigma {
				q *= scale / sigma
			}
			lo[i], up[i] = center-q*sigma, center+q*sigma
			hz.intervals[i] = Interval{Level: s.cfg.Levels[i], Coverage: hz.hits[i].share(), Covered: hz.hits[i].count(),
				Lower: lo[i], Upper: up[i], Multiplier: q}
		}
		if emit {
			f := &s.forecasts[k]
			*f = Forecast{Horizon: hz.h, Start: start, Target: start.Add(time.Duration(hz.h) * s.cfg.Interval),
				Center: center, Sigma: sigma, Variance: variance, Model: s.names[sel],
				NaiveLast: p.naiveLast, NaiveDay: p.naiveDay, Regime: p.regime, Intervals: hz.intervals,
				Ready: ready && cal.Len() >= 10 && variance > 0}
		}
	}
}

// best is the candidate with the lowest trailing loss of b and those in
// [from, to), b being the best of those before from (best(hz, i, i+1, to)
// is the best in [i, to)); the first until any has been scored.
func (s *Series) best(hz *horizon, b, from, to int) int {
	ls := hz.loss[:to]
	bn, bv := ls[b].n, ls[b].v
	for c := from; c < to; c++ {
		if l := &ls[c]; l.n > 0 && (bn == 0 || l.v < bv) {
			b, bn, bv = c, l.n, l.v
		}
	}
	return b
}
