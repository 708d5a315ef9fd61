package notifier

import (
	"math"
	"slices"
	"strings"
	"time"

	"cryptostream/streams"
)

// Suppression reasons: why a rule whose condition held did not fire.
const (
	ReasonCooldown   = "cooldown"
	ReasonPerCandle  = "once_per_candle"
	ReasonSpent      = "spent"
	ReasonExpired    = "expired"
	ReasonRateCapped = "rate_cap"
)

// EngineConfig tunes an Engine.
type EngineConfig struct {
	// UserRateCap is the most firings one user's rules may make in
	// RateWindow (0: no cap). System rules are not capped.
	UserRateCap int
	RateWindow  time.Duration
	// MaxSecurityKeys bounds the usernames and addresses a failed-logins
	// rule tracks at once: a password spray over random names must not
	// grow the state without bound.
	MaxSecurityKeys int
	// OnSuppress, when set, sees every suppressed firing (for metrics).
	OnSuppress func(rule *Rule, reason string)
}

func (c *EngineConfig) defaults() {
	if c.RateWindow == 0 {
		c.RateWindow = time.Hour
	}
	if c.MaxSecurityKeys == 0 {
		c.MaxSecurityKeys = 100_000
	}
}

// Source names where an input event was stored, for an alert's provenance.
type Source struct {
	Stream string
	Seq    uint64
}

// Engine evaluates rules over events given in event time. It is not safe
// for concurrent use: one goroutine feeds it, as one consumer feeds a stage.
// Every time it uses comes from the events, so feeding the same events in
// the same order gives the same alerts, live or replayed.
type Engine struct {
	cfg      EngineConfig
	rules    map[string]*ruleState
	bySeries map[seriesKey][]*ruleState
	security []*ruleState
	series   map[seriesKey]*series
	users    map[string][]time.Time
	// quiet is set while warming: firings rebuild state but are dropped,
	// and suppressions are not counted again.
	quiet bool
}

type seriesKey struct {
	symbol   string
	interval streams.Interval
}

// NewEngine returns an engine with no rules.
func NewEngine(cfg EngineConfig) *Engine {
	cfg.defaults()
	return &Engine{cfg: cfg, rules: map[string]*ruleState{}, bySeries: map[seriesKey][]*ruleState{},
		series: map[seriesKey]*series{}, users: map[string][]time.Time{}}
}

// ruleState is a rule and what its evaluation remembers.
type ruleState struct {
	r          Rule
	legs       [2]leg
	lastFire   time.Time
	lastCandle time.Time // start of the candle of the last firing
	spent      bool
	logins     map[string]*loginWindow
}

// leg is one side of a condition (a rule watching either direction has
// two): it fires when its value reaches the threshold while armed, and
// re-arms once the value has fallen back below the threshold by the
// hysteresis margin.
type leg struct{ armed bool }

type loginWindow struct {
	at    []time.Time
	armed bool
}

// SetRules replaces the rule set. A rule whose definition did not change
// keeps its state (armed legs, cooldown), so a rule edit elsewhere does not
// re-fire everything; a changed rule starts afresh. Disabled rules, and
// user rules naming no account, are dropped.
func (e *Engine) SetRules(rules []Rule) {
	next := make(map[string]*ruleState, len(rules))
	for _, r := range rules {
		if r.Disabled || (!r.System() && r.OwnerID == "") {
			// A rule naming no account would reach nobody, or everybody
			// if its alerts were taken for the system's.
			continue
		}
		if old, ok := e.rules[r.ID]; ok && sameCondition(old.r, r) {
			old.r = r
			old.spent = old.spent || r.FiredAt != nil
			next[r.ID] = old
			continue
		}
		next[r.ID] = newRuleState(r)
	}
	e.rules = next
	// A user's rate-cap history goes with their last rule: a deleted
	// account leaves nothing behind.
	owners := make(map[string]bool, len(e.users))
	for _, rs := range next {
		owners[rs.r.OwnerID] = true
	}
	for id := range e.users {
		if !owners[id] {
			delete(e.users, id)
		}
	}
	e.bySeries = map[seriesKey][]*ruleState{}
	e.security = nil
	need := map[seriesKey]int{}
	for _, rs := range next {
		if rs.r.Kind.Security() {
			e.security = append(e.security, rs)
			continue
		}
		k := seriesKey{rs.r.Symbol, rs.r.Interval}
		e.bySeries[k] = append(e.bySeries[k], rs)
		need[k] = max(need[k], rs.bars())
	}
	byID := func(a, b *ruleState) int { return strings.Compare(a.r.ID, b.r.ID) }
	for k, list := range e.bySeries {
		slices.SortFunc(list, byID)
		s := e.series[k]
		if s == nil {
			s = &series{fc: newForecasts()}
			e.series[k] = s
		}
		s.keep = need[k]
	}
	slices.SortFunc(e.security, byID)
	for k := range e.series {
		if _, ok := e.bySeries[k]; !ok {
			delete(e.series, k)
		}
	}
}

// Rules is the number of active rules.
func (e *Engine) Rules() int { return len(e.rules) }

// sameCondition reports whether two versions of a rule evaluate alike.
func sameCondition(a, b Rule) bool {
	return a.Kind == b.Kind && a.Symbol == b.Symbol && a.Interval == b.Interval && a.Direction == b.Direction &&
		a.Threshold == b.Threshold && a.Window == b.Window && a.Count == b.Count && a.Horizon == b.Horizon && a.Per == b.Per &&
		a.Trigger == b.Trigger && a.Hysteresis == b.Hysteresis
}

func newRuleState(r Rule) *ruleState {
	rs := &ruleState{r: r, spent: r.FiredAt != nil}
	// A cross needs the price seen on the near side first: a rule created
	// above its level has not seen the price cross it.
	armed := r.Kind != KindPriceCross
	rs.legs = [2]leg{{armed}, {armed}}
	if r.Kind == KindFailedLogins {
		rs.logins = map[string]*loginWindow{}
	}
	return rs
}

// bars is how many closes the rule needs kept.
func (rs *ruleState) bars() int {
	r := rs.r
	w := int(r.Window.D() / r.Interval.Duration())
	switch r.Kind {
	case KindPercentMove:
		return w + 1
	case KindVolatilitySpike:
		return w*(r.Count+1) + 1
	}
	return 1
}

// series is the recent history of one symbol and interval, shared by every
// rule on it: the closes (from MARKET) and the forecasts (from
// PREDICTIONS), kept apart because two stages feed them and each is warmed
// and reset on its own.
type series struct {
	keep   int
	ends   []time.Time
	closes []float64
	cum    []float64 // cumulative sum of squared log returns; cum[0] = 0
	last   time.Time // start of the newest close
	fc     *forecasts
}

// forecasts is the live scoring of a series' predictions, from the
// PREDICTIONS stream alone: a prediction carries the close of the candle
// it was made at, which is the outcome of every earlier prediction that
// targeted that candle. Scoring needs no candle, so it does not depend on
// how the MARKET and PREDICTIONS stages interleave: live, replayed or
// previewed, the same predictions score alike.
type forecasts struct {
	pending map[int64]pendingPrediction // by target start
	scored  []score
	model   string    // the model of the scores kept: a new champion starts afresh
	last    time.Time // start of the newest prediction
}

func newForecasts() *forecasts { return &forecasts{pending: map[int64]pendingPrediction{}} }

type pendingPrediction struct {
	close, predicted float64 // the close it was made at, the predicted log return
	model            string
}

type score struct{ model, zero float64 } // squared errors

const maxScored = 1000

func (s *series) add(c streams.Candle) bool {
	if !s.last.IsZero() && !c.Start.After(s.last) {
		return false // a redelivered or out-of-order close changes nothing
	}
	s.last = c.Start
	cum := 0.0
	if n := len(s.closes); n > 0 {
		r := math.Log(c.Close / s.closes[n-1])
		cum = s.cum[n-1] + r*r
	}
	s.ends = append(s.ends, c.End())
	s.closes = append(s.closes, c.Close)
	s.cum = append(s.cum, cum)
	if n := len(s.closes); n > 2*s.keep && n > 64 {
		drop := n - s.keep
		base := s.cum[drop]
		s.ends = slices.Delete(s.ends, 0, drop)
		s.closes = slices.Delete(s.closes, 0, drop)
		s.cum = slices.Delete(s.cum, 0, drop)
		for i := range s.cum {
			s.cum[i] -= base
		}
	}
	return true
}

// closeAt is the last close at or before t.
func (s *series) closeAt(t time.Time) (float64, bool) {
	i, found := slices.BinarySearchFunc(s.ends, t, func(e, t time.Time) int { return e.Compare(t) })
	if !found {
		i--
	}
	if i < 0 {
		return 0, false
	}
	return s.closes[i], true
}

// Candle evaluates the rules of a closed candle's series.
func (e *Engine) Candle(c streams.Candle, src Source) []streams.Alert {
	k := seriesKey{c.Symbol, c.Interval}
	rules := e.bySeries[k]
	if len(rules) == 0 {
		return nil
	}
	s := e.series[k]
	if !s.add(c) {
		return nil
	}
	ev := input{at: c.End(), candle: c.Start, src: src, symbol: c.Symbol, interval: c.Interval}
	var out []streams.Alert
	for _, rs := range rules {
		switch rs.r.Kind {
		case KindPriceCross:
			out = e.price(out, rs, ev, c.Close)
		case KindPercentMove:
			out = e.move(out, rs, ev, s, c.Close)
		case KindVolatilitySpike:
			out = e.volatility(out, rs, ev, s)
		}
	}
	return out
}

// Tick evaluates the rules that may trigger on the running candle.
func (e *Engine) Tick(t streams.Tick, src Source) []streams.Alert {
	c := t.Candle
	k := seriesKey{c.Symbol, c.Interval}
	rules := e.bySeries[k]
	s := e.series[k]
	if len(rules) == 0 || (!s.last.IsZero() && !c.Start.After(s.last)) {
		return nil // a tick of a candle already closed is stale
	}
	at := t.ReceivedAt
	if at.IsZero() || at.Before(c.Start) {
		at = c.Start
	}
	ev := input{at: at, candle: c.Start, src: src, symbol: c.Symbol, interval: c.Interval}
	var out []streams.Alert
	for _, rs := range rules {
		if rs.r.Trigger == TriggerOncePerClose {
			continue
		}
		switch rs.r.Kind {
		case KindPriceCross:
			out = e.price(out, rs, ev, c.Close)
		case KindPercentMove:
			out = e.move(out, rs, ev, s, c.Close)
		}
	}
	return out
}

// Prediction scores the earlier predictions that targeted this one's
// candle, keeps this one to score in turn, and evaluates the predicted-move
// rules and, when a score landed, the model-error ones.
func (e *Engine) Prediction(p streams.Prediction, src Source) []streams.Alert {
	k := seriesKey{p.Symbol, p.Interval}
	rules := e.bySeries[k]
	if len(rules) == 0 {
		return nil
	}
	f := e.series[k].fc
	if !f.last.IsZero() && !p.Start.After(f.last) {
		return nil // a redelivered or out-of-order prediction changes nothing
	}
	f.last = p.Start
	scoredNow := f.score(p)
	// A no-change forecast is the zero-return forecast itself: scoring it
	// against zero would compare it with itself.
	if len(f.pending) < 10_000 && p.ModelID != streams.ModelNoChange {
		f.pending[p.Target.Unix()] = pendingPrediction{close: p.Close, predicted: math.Log(p.PredictedClose / p.Close), model: p.ModelID}
	}
	ev := input{at: p.Start.Add(p.Interval.Duration()), candle: p.Start, src: src, symbol: p.Symbol, interval: p.Interval}
	var out []streams.Alert
	for _, rs := range rules {
		switch {
		case rs.r.Kind == KindPredictedMove:
			out = e.predicted(out, rs, ev, p)
		case rs.r.Kind == KindModelError && scoredNow:
			out = e.modelError(out, rs, ev, f)
		case rs.r.Kind == KindForecastFailing:
			out = e.forecastFailing(out, rs, ev, p)
		}
	}
	return out
}

// score scores the pending prediction whose target is p's candle with
// p's close, and drops those whose target went by without a prediction.
func (f *forecasts) score(p streams.Prediction) bool {
	at := p.Start.Unix()
	scored := false
	if pp, ok := f.pending[at]; ok {
		if pp.model != f.model {
			f.scored, f.model = f.scored[:0], pp.model
		}
		actual := math.Log(p.Close / pp.close)
		d := actual - pp.predicted
		f.scored = append(f.scored, score{d * d, actual * actual})
		if len(f.scored) > 2*maxScored {
			f.scored = slices.Delete(f.scored, 0, len(f.scored)-maxScored)
		}
		scored = true
		delete(f.pending, at)
	}
	for t := range f.pending {
		if t < at {
			delete(f.pending, t) // its target candle has no prediction: no outcome known
		}
	}
	return scored
}

// Audit evaluates the security rules.
func (e *Engine) Audit(a streams.AuditEvent, src Source) []streams.Alert {
	var out []streams.Alert
	ev := input{at: a.At, src: src}
	for _, rs := range e.security {
		r := &rs.r
		switch {
		// A rate-limited attempt is a failure too: an attacker who hits
		// the limiter is still guessing.
		case a.Action != AuditAction(r.Kind):
		case r.Kind == KindFailedLogins && (a.Outcome == "failed" || a.Outcome == "rate_limited"):
			out = e.failedLogin(out, rs, ev, a)
		case r.Kind == KindRoleGranted && a.Outcome == "ok":
			ev.key = a.Target
			out = e.fire(out, rs, ev, firing{value: 1, threshold: 1,
				msg: "role of " + a.Target + " changed by " + a.Actor + " (" + a.Detail + ")"})
		case r.Kind == KindUserDeleted && a.Outcome == "ok":
			ev.key = a.Target
			out = e.fire(out, rs, ev, firing{value: 1, threshold: 1, msg: "user " + a.Target + " deleted by " + a.Actor})
		}
	}
	return out
}

// input is what one event gives every rule it reaches.
type input struct {
	at       time.Time // trigger time
	candle   time.Time // start of the candle it belongs to
	src      Source
	symbol   string
	interval streams.Interval
	key      string
}

type firing struct {
	value, threshold float64
	values           map[string]float64
	msg              string
}

// check runs one leg: it reports whether the leg triggers now.
func (l *leg) check(value, threshold, hysteresis float64) bool {
	if value >= threshold {
		was := l.armed
		l.armed = false
		return was
	}
	if value < threshold-hysteresis*math.Abs(threshold) {
		l.armed = true
	}
	return false
}

func (e *Engine) price(out []streams.Alert, rs *ruleState, ev input, price float64) []streams.Alert {
	r := &rs.r
	lvl := r.Threshold
	if (r.Direction == Up || r.Direction == Either) && rs.legs[0].check(price, lvl, r.Hysteresis) {
		out = e.fire(out, rs, ev, firing{value: price, threshold: lvl, msg: crossMessage(r.Symbol, "rose above ", lvl, price)})
	}
	if (r.Direction == Down || r.Direction == Either) && rs.legs[1].check(-price, -lvl, r.Hysteresis) {
		out = e.fire(out, rs, ev, firing{value: price, threshold: lvl, msg: crossMessage(r.Symbol, "fell below ", lvl, price)})
	}
	return out
}

// crossMessage says a price crossed a level; a price exactly at the level
// reached it, and did not go past.
func crossMessage(symbol, verb string, lvl, price float64) string {
	if price == lvl {
		return symbol + " reached " + fmtPrice(lvl)
	}
	l, p := fmtPrices(lvl, price)
	return symbol + " " + verb + l + " to " + p
}

func (e *Engine) move(out []streams.Alert, rs *ruleState, ev input, s *series, price float64) []streams.Alert {
	r := &rs.r
	// The window ends at the close of the candle being evaluated, for a
	// running candle too.
	from, ok := s.closeAt(ev.candle.Add(r.Interval.Duration() - r.Window.D()))
	if !ok {
		return out
	}
	pct := (price/from - 1) * 100
	// Built only for a firing: a map per evaluation would be most of its
	// cost.
	f := func(word string) firing {
		return firing{value: pct, threshold: r.Threshold, values: map[string]float64{"from": from, "to": price, "percent": pct},
			msg: r.Symbol + " " + word + " " + fmtPercent(math.Abs(pct)) + " in " + fmtWindow(r.Window.D()) + " to " + fmtPrice(price)}
	}
	switch r.Direction {
	case Up:
		if rs.legs[0].check(pct, r.Threshold, r.Hysteresis) {
			out = e.fire(out, rs, ev, f("rose"))
		}
	case Down:
		if rs.legs[0].check(-pct, r.Threshold, r.Hysteresis) {
			out = e.fire(out, rs, ev, f("fell"))
		}
	default:
		if rs.legs[0].check(math.Abs(pct), r.Threshold, r.Hysteresis) {
			word := "rose"
			if pct < 0 {
				word = "fell"
			}
			out = e.fire(out, rs, ev, f(word))
		}
	}
	return out
}

func (e *Engine) volatility(out []streams.Alert, rs *ruleState, ev input, s *series) []streams.Alert {
	r := &rs.r
	w := int(r.Window.D() / r.Interval.Duration())
	n := len(s.cum) - 1 // the newest close's index
	if n < w*(r.Count+1) {
		return out
	}
	recent := (s.cum[n] - s.cum[n-w]) / float64(w)
	base := (s.cum[n-w] - s.cum[n-w*(r.Count+1)]) / float64(w*r.Count)
	if base <= 0 {
		return out
	}
	ratio := math.Sqrt(recent / base)
	if !rs.legs[0].check(ratio, r.Threshold, r.Hysteresis) {
		return out
	}
	// Per-candle volatility, in percent, for a reader.
	vNow, vBase := math.Sqrt(recent)*100, math.Sqrt(base)*100
	return e.fire(out, rs, ev, firing{value: ratio, threshold: r.Threshold,
		values: map[string]float64{"volatility": vNow, "average": vBase},
		msg: r.Symbol + " volatility over " + fmtWindow(r.Window.D()) + " is " + fmtRatio(ratio) + "x its recent average (" +
			fmtPercent(vNow) + " vs " + fmtPercent(vBase) + " per " + r.Interval.String() + " candle)"})
}

func (e *Engine) modelError(out []streams.Alert, rs *ruleState, ev input, f *forecasts) []streams.Alert {
	r := &rs.r
	if len(f.scored) < r.Count {
		return out
	}
	var model, zero float64
	for _, sc := range f.scored[len(f.scored)-r.Count:] {
		model += sc.model
		zero += sc.zero
	}
	rmse := math.Sqrt(model/float64(r.Count)) * 100
	zrmse := math.Sqrt(zero/float64(r.Count)) * 100
	vals := func() map[string]float64 { return map[string]float64{"rmse": rmse, "zero_rmse": zrmse} }
	if r.Threshold > 0 {
		if rs.legs[0].check(rmse, r.Threshold, r.Hysteresis) {
			out = e.fire(out, rs, ev, firing{value: rmse, threshold: r.Threshold, values: vals(),
				msg: r.Symbol + " model error over the last " + itoa(r.Count) + " predictions is " + fmtPercent(rmse) + " (above " + fmtPercent(r.Threshold) + ")"})
		}
		return out
	}
	if zrmse == 0 {
		return out
	}
	ratio := rmse / zrmse
	if rs.legs[0].check(ratio, 1, r.Hysteresis) {
		out = e.fire(out, rs, ev, firing{value: ratio, threshold: 1, values: vals(),
			msg: r.Symbol + " model is worse than the no-change forecast over the last " + itoa(r.Count) + " predictions (error " +
				fmtPercent(rmse) + " vs " + fmtPercent(zrmse) + ")"})
	}
	return out
}

// forecastFailing follows the live score's failing flag that each
// prediction carries: the leg fires when the flag goes up at the rule's
// horizon (any, for none) and re-arms when a prediction has it down.
func (e *Engine) forecastFailing(out []streams.Alert, rs *ruleState, ev input, p streams.Prediction) []streams.Alert {
	r := &rs.r
	want := int(r.Horizon.D() / r.Interval.Duration())
	var failing []streams.HorizonForecast
	watched := false
	for _, f := range p.Forecasts {
		if want == 0 || f.Horizon == want {
			watched = true
			if f.Failing {
				failing = append(failing, f)
			}
		}
	}
	if !watched {
		return out // a prediction without the horizon says nothing of it
	}
	if !rs.legs[0].check(float64(len(failing)), 1, 0) {
		return out
	}
	first := failing[0]
	names := make([]string, len(failing))
	for i, f := range failing {
		names[i] = fmtWindow(time.Duration(f.Horizon) * r.Interval.Duration())
	}
	what := names[0] + " forecast is failing: its "
	if len(failing) > 1 {
		what = strings.Join(names, ", ") + " forecasts are failing: the " + names[0] + " one's "
	}
	return e.fire(out, rs, ev, firing{value: float64(len(failing)), threshold: 1,
		values: map[string]float64{"horizon": float64(first.Horizon), "failing_horizons": float64(len(failing))},
		msg:    r.Symbol + " " + what + strings.TrimPrefix(first.FailingReason, "the ")})
}

func (e *Engine) predicted(out []streams.Alert, rs *ruleState, ev input, p streams.Prediction) []streams.Alert {
	r := &rs.r
	pct := (p.PredictedClose/p.Close - 1) * 100
	v := pct
	switch r.Direction {
	case Down:
		v = -pct
	case Either:
		v = math.Abs(pct)
	}
	// Each prediction is a new forecast, not a continuing condition: the
	// leg is re-armed by every prediction below the threshold.
	if !rs.legs[0].check(v, r.Threshold, r.Hysteresis) {
		return out
	}
	word := "rise"
	if pct < 0 {
		word = "fall"
	}
	_, to := fmtPrices(p.Close, p.PredictedClose)
	return e.fire(out, rs, ev, firing{value: pct, threshold: r.Threshold,
		values: map[string]float64{"close": p.Close, "predicted": p.PredictedClose, "lower": p.Lower, "upper": p.Upper, "horizon": float64(p.Horizon)},
		msg: r.Symbol + " is predicted to " + word + " " + fmtPercent(math.Abs(pct)) + " to " + to +
			" by " + p.Target.Add(p.Interval.Duration()).UTC().Format("15:04") + " UTC (interval " + fmtPrice(p.Lower) + " to " + fmtPrice(p.Upper) + ", model " + p.ModelID + ")"})
}

func (e *Engine) failedLogin(out []streams.Alert, rs *ruleState, ev input, a streams.AuditEvent) []streams.Alert {
	r := &rs.r
	key := strings.ToLower(a.Target)
	if key == "" {
		key = strings.ToLower(a.Actor)
	}
	if r.Per == PerIP {
		key = a.Remote
	}
	if key == "" {
		return out
	}
	lw := rs.logins[key]
	if lw == nil {
		if len(rs.logins) >= e.cfg.MaxSecurityKeys {
			rs.pruneLogins(a.At, r.Window.D())
			if len(rs.logins) >= e.cfg.MaxSecurityKeys {
				return out
			}
		}
		lw = &loginWindow{armed: true}
		rs.logins[key] = lw
	}
	// An aggregated event (the gateway counts refused attempts) stands
	// for Count attempts spread from At to Until.
	last := a.At
	n := max(a.Count, 1)
	if n > 1 && a.Until.After(a.At) {
		last = a.Until
	}
	for j := max(0, n-r.Count); j < n; j++ {
		t := a.At
		if n > 1 {
			t = a.At.Add(time.Duration(int64(last.Sub(a.At)) * int64(j) / int64(n-1)))
		}
		lw.at = append(lw.at, t)
	}
	cut := last.Add(-r.Window.D())
	i := 0
	for i < len(lw.at) && !lw.at[i].After(cut) {
		i++
	}
	lw.at = lw.at[i:]
	if len(lw.at) > r.Count {
		lw.at = lw.at[len(lw.at)-r.Count:]
	}
	ev.at = last
	count := float64(len(lw.at))
	l := leg{lw.armed}
	fire := l.check(count, float64(r.Count), 0)
	lw.armed = l.armed
	if !fire {
		return out
	}
	ev.key = key
	what := "user " + key
	if r.Per == PerIP {
		what = "address " + key
	}
	return e.fire(out, rs, ev, firing{value: count, threshold: float64(r.Count),
		msg: itoa(len(lw.at)) + " failed logins for " + what + " in " + fmtWindow(r.Window.D())})
}

func (rs *ruleState) pruneLogins(now time.Time, window time.Duration) {
	for k, lw := range rs.logins {
		if n := len(lw.at); n == 0 || !lw.at[n-1].After(now.Add(-window)) {
			delete(rs.logins, k)
		}
	}
}

// fire turns a triggered condition into an alert unless a guard suppresses
// it. A suppressed trigger still consumed the leg: the condition must clear
// before the rule can fire again, which is what keeps a rule in cooldown
// from firing late, when the move is already old.
func (e *Engine) fire(out []streams.Alert, rs *ruleState, ev input, f firing) []streams.Alert {
	r := &rs.r
	reason := ""
	switch {
	case rs.spent:
		reason = ReasonSpent
	case r.ExpiresAt != nil && !ev.at.Before(*r.ExpiresAt):
		reason = ReasonExpired
	case r.Trigger == TriggerOncePerCandle && !ev.candle.IsZero() && ev.candle.Equal(rs.lastCandle):
		reason = ReasonPerCandle
	case r.Cooldown > 0 && !rs.lastFire.IsZero() && ev.at.Before(rs.lastFire.Add(r.Cooldown.D())):
		reason = ReasonCooldown
	case !e.allowUser(r.OwnerID, ev.at):
		reason = ReasonRateCapped
	}
	if reason != "" {
		if e.cfg.OnSuppress != nil && !e.quiet {
			e.cfg.OnSuppress(r, reason)
		}
		return out
	}
	rs.lastFire, rs.lastCandle = ev.at, ev.candle
	if r.Trigger == TriggerOnce {
		rs.spent = true
	}
	owner := r.OwnerID
	if r.System() && r.Kind.Security() {
		owner = streams.AlertAudienceAdmins
	}
	idKey := ev.symbol
	if idKey == "" {
		idKey = ev.key
	}
	return append(out, streams.Alert{
		Schema: streams.Schema{V: streams.SchemaVersion},
		ID:     streams.AlertID(r.ID, idKey, ev.at), RuleID: r.ID, Owner: owner,
		Symbol: ev.symbol, Interval: ev.interval, Key: ev.key, Kind: string(r.Kind),
		Message: f.msg, Value: f.value, Threshold: f.threshold, Values: f.values,
		At: ev.at.UTC(), Stream: ev.src.Stream, Seq: ev.src.Seq,
	})
}

// allowUser applies the per-user rate cap and, when the firing is allowed,
// counts it.
func (e *Engine) allowUser(owner string, at time.Time) bool {
	if e.cfg.UserRateCap <= 0 || owner == SystemOwner {
		return true
	}
	times := e.users[owner]
	cut := at.Add(-e.cfg.RateWindow)
	i := 0
	for i < len(times) && !times[i].After(cut) {
		i++
	}
	times = times[i:]
	if e.quiet && slices.ContainsFunc(times, at.Equal) {
		e.users[owner] = times
		return true // counted when it first fired, before a restart of the series
	}
	if len(times) >= e.cfg.UserRateCap {
		e.users[owner] = times
		return false
	}
	e.users[owner] = append(times, at)
	return true
}

// Warm feeds inputs that were handled before (history replayed after a
// start or a failover): the state ends as the uninterrupted run left it,
// and nothing fires.
func (e *Engine) Warm(inputs []Input) {
	e.quiet = true
	defer func() { e.quiet = false }()
	for _, in := range inputs {
		e.Feed(in)
	}
}

// ResetSeries forgets a series' closes and the state of every rule on
// them, so that they can be warmed again from history. Its forecasts are
// ResetForecasts'.
func (e *Engine) ResetSeries(symbol string, iv streams.Interval) {
	k := seriesKey{symbol, iv}
	if s := e.series[k]; s != nil {
		e.series[k] = &series{keep: s.keep, fc: s.fc}
	}
	for _, rs := range e.bySeries[k] {
		if !rs.r.Kind.OnPredictions() {
			*rs = *newRuleState(rs.r)
		}
	}
}

// ResetForecasts forgets a series' predictions and scores and the state of
// every rule on them.
func (e *Engine) ResetForecasts(symbol string, iv streams.Interval) {
	k := seriesKey{symbol, iv}
	if s := e.series[k]; s != nil {
		s.fc = newForecasts()
	}
	for _, rs := range e.bySeries[k] {
		if rs.r.Kind.OnPredictions() {
			*rs = *newRuleState(rs.r)
		}
	}
}

// ResetSymbol forgets every series of a symbol (closes and forecasts, on
// every interval) and the state of every rule on them: what an instance
// that gives a symbol up, or takes it, must not keep.
func (e *Engine) ResetSymbol(symbol string) {
	for k := range e.bySeries {
		if k.symbol == symbol {
			e.ResetSeries(k.symbol, k.interval)
			e.ResetForecasts(k.symbol, k.interval)
		}
	}
	for k, s := range e.series {
		if k.symbol == symbol {
			e.series[k] = &series{keep: s.keep, fc: newForecasts()}
		}
	}
}

// ResetSecurity forgets the state of every security rule.
func (e *Engine) ResetSecurity() {
	for _, rs := range e.security {
		*rs = *newRuleState(rs.r)
	}
}

// SecurityWindow is how many audit events of one action the security
// rules need to rebuild their state: the largest count.
func (e *Engine) SecurityWindow() int {
	n := 0
	for _, rs := range e.security {
		n = max(n, rs.r.Count)
	}
	return n
}

// Watches reports whether a rule watches the series' predictions (with
// predictions) or its candles.
func (e *Engine) Watches(symbol string, iv streams.Interval, predictions bool) bool {
	for _, rs := range e.bySeries[seriesKey{symbol, iv}] {
		if rs.r.Kind.OnPredictions() == predictions {
			return true
		}
	}
	return false
}
