package ingest

import (
	"math"
	"sort"
	"time"

	"cryptostream/streams"
)

// Assembler turns the running candles that one subscription interval
// delivers into final candles, once each, in order, with every gap either
// healed from REST or filled by the empty-interval policy. It does no I/O
// and is not safe for concurrent use: the connection loop owns it.
//
// A series' life on one connection: Begin when its subscription is acked
// (a REST heal is requested at once), Update on every WebSocket candle,
// Healed when the REST answer comes back. WebSocket candles finalised
// before the heal has reached them wait in a pending list, so MARKET
// always receives a series in ascending order. Drop ends the session (an
// unsubscribe or a lost connection): the running candle, which may be
// incomplete, is discarded and REST supplies it after the next Begin.
type Assembler struct {
	iv          streams.Interval
	grace       time.Duration
	maxAttempts int
	series      map[string]*series
	offset      time.Duration // server clock minus local clock
	lastFrame   time.Time     // local receipt of the newest frame of any kind
}

type series struct {
	active   bool
	known    bool           // last holds the newest stored candle
	last     streams.Candle // newest final candle, stored or being stored
	anchored bool           // the WebSocket stream continues from last
	first    time.Time      // first WebSocket interval_begin of this session
	cur      *streams.Candle
	pending  []streams.Candle
	healing  bool
	attempts int
}

// Emit is what the caller must do after an assembler call.
type Emit struct {
	Final []streams.Candle // to MARKET, in order
	Tick  bool             // the update was accepted: publish it to TICKS
	Heal  bool             // request a REST heal of this series
	Gap   bool             // a gap could not be healed and was left open
	// Behind is how far a stale update (at or before the newest final
	// candle) lies behind it; zero otherwise.
	Behind time.Duration
}

// NewAssembler returns an assembler for one interval. grace is how long past
// a candle's end the timer waits before calling it final; maxHealAttempts
// bounds the REST heals spent on reaching a session's first candle.
func NewAssembler(iv streams.Interval, grace time.Duration, maxHealAttempts int) *Assembler {
	if maxHealAttempts < 1 {
		maxHealAttempts = 1
	}
	return &Assembler{iv: iv, grace: grace, maxAttempts: maxHealAttempts, series: map[string]*series{}}
}

func (a *Assembler) get(sym string) *series {
	s := a.series[sym]
	if s == nil {
		s = &series{}
		a.series[sym] = s
	}
	return s
}

// Seed tells the assembler the newest candle already stored for a symbol,
// so nothing at or before it is published again.
func (a *Assembler) Seed(last streams.Candle) {
	s := a.get(last.Symbol)
	if !s.known || last.Start.After(s.last.Start) {
		s.last, s.known = last, true
	}
}

// Last returns the newest final candle of a symbol.
func (a *Assembler) Last(sym string) (streams.Candle, bool) {
	s := a.series[sym]
	if s == nil || !s.known {
		return streams.Candle{}, false
	}
	return s.last, true
}

// Begin starts a session for sym (its subscription was acked) and asks for
// a heal.
func (a *Assembler) Begin(sym string) Emit {
	s := a.get(sym)
	a.reset(s)
	s.active = true
	s.healing = true
	return Emit{Heal: true}
}

// Drop ends the session of sym.
func (a *Assembler) Drop(sym string) {
	if s := a.series[sym]; s != nil {
		a.reset(s)
	}
}

// DropAll ends every session: the connection is gone.
func (a *Assembler) DropAll() {
	for _, s := range a.series {
		a.reset(s)
	}
}

func (a *Assembler) reset(s *series) {
	s.active, s.anchored, s.healing = false, false, false
	s.first, s.cur, s.pending, s.attempts = time.Time{}, nil, nil, 0
}

// Active reports whether sym has a session.
func (a *Assembler) Active(sym string) bool {
	s := a.series[sym]
	return s != nil && s.active
}

// SinceForHeal is the since to pass to REST OHLC for sym: the newest final
// candle's start, or zero when nothing is known.
func (a *Assembler) SinceForHeal(sym string) time.Time {
	s := a.series[sym]
	if s == nil || !s.known {
		return time.Time{}
	}
	return s.last.Start
}

// Frame records that a frame arrived at local time recv; sent is the
// server's message timestamp, when the frame had one. The offset between the
// two clocks lets the timer judge a candle's end by the server's clock,
// which is the one interval_begin is on (krakensim's runs fast).
func (a *Assembler) Frame(recv, sent time.Time) {
	a.lastFrame = recv
	if !sent.IsZero() {
		a.offset = sent.Sub(recv)
	}
}

// Update feeds one WebSocket candle. A candle at or before the newest final
// one is stale and ignored.
func (a *Assembler) Update(c streams.Candle) (Emit, error) {
	s := a.series[c.Symbol]
	if s == nil || !s.active {
		return Emit{}, reject(ReasonUnknownSymbol, "no subscription for %q", c.Symbol)
	}
	if c.Interval != a.iv {
		return Emit{}, reject(ReasonInvalidCandle, "%s candle on the %s connection", c.Interval, a.iv)
	}
	if s.known && !c.Start.After(s.last.Start) {
		return Emit{Behind: s.last.Start.Sub(c.Start) + a.iv.Duration()}, nil
	}
	var e Emit
	if s.cur != nil {
		switch {
		case c.Start.Before(s.cur.Start):
			return Emit{}, nil
		case c.Start.After(s.cur.Start):
			a.finalise(s, *s.cur, &e)
		}
	}
	if s.anchored && s.known {
		// A trade in a later interval of one unbroken stream proves the
		// intervals between had none: fill them now, not when c closes.
		if fills := FillBetween(s.last, c.Start); len(fills) > 0 {
			e.Final = append(e.Final, fills...)
			s.last = fills[len(fills)-1]
		}
	}
	c.Quality = streams.QualityLive
	s.cur = &c
	e.Tick = true
	if s.first.IsZero() {
		s.first = c.Start
		a.tryAnchor(s, &e)
	}
	return e, nil
}

// finalise hands a final WebSocket candle on, filling the empty intervals
// before it when the stream is continuous, or parks it until the heal has
// caught up.
func (a *Assembler) finalise(s *series, c streams.Candle, e *Emit) {
	if !s.anchored {
		s.pending = append(s.pending, c)
		return
	}
	if s.known {
		e.Final = append(e.Final, FillBetween(s.last, c.Start)...)
	}
	e.Final = append(e.Final, c)
	s.last, s.known = c, true
}

// tryAnchor joins the WebSocket stream to the stored series once the heal
// has reached the session's first candle, and flushes what waited.
func (a *Assembler) tryAnchor(s *series, e *Emit) {
	if s.anchored || s.first.IsZero() || s.healing {
		return
	}
	switch {
	case !s.known || !s.first.After(s.last.Start.Add(a.iv.Duration())):
		// Continuous: nothing or one interval lies between the stored
		// series and the stream, and nothing is unknown.
		s.anchored = true
		a.flush(s, s.known, e)
	case s.attempts >= a.maxAttempts:
		s.anchored = true
		e.Gap = true
		a.flush(s, false, e)
	default:
		s.healing = true
		e.Heal = true
	}
}

func (a *Assembler) flush(s *series, contiguous bool, e *Emit) {
	var prev *streams.Candle
	if contiguous && s.known {
		prev = &s.last
	}
	pend := s.pending
	s.pending = nil
	if s.known && prev == nil {
		pend = after(pend, s.last.Start)
	}
	out := Regularize(prev, pend)
	if len(out) > 0 {
		e.Final = append(e.Final, out...)
		s.last, s.known = out[len(out)-1], true
	}
}

func after(cs []streams.Candle, t time.Time) []streams.Candle {
	i := sort.Search(len(cs), func(i int) bool { return cs[i].Start.After(t) })
	return cs[i:]
}

// Healed applies a REST answer for sym: committed candles in ascending
// order, already marked backfilled (filler rows included, as Kraken sends
// them). A nil or failed heal is Healed with no rows.
func (a *Assembler) Healed(sym string, rows []streams.Candle) Emit {
	return a.HealedSeries(sym, Series{Candles: rows})
}

// HealedSeries is Healed for an answer that lost rows to validation: the
// gaps they leave are not filled (RegularizeSeries).
func (a *Assembler) HealedSeries(sym string, hs Series) Emit {
	rows := hs.Candles
	var e Emit
	s := a.series[sym]
	if s == nil || !s.active {
		return e
	}
	s.healing = false
	s.attempts++
	var prev *streams.Candle
	if s.known {
		if len(rows) > 0 && rows[0].Start.After(s.last.Start.Add(a.iv.Duration())) {
			// REST's window starts after a gap it cannot cover.
			e.Gap = true
		} else {
			prev = &s.last
		}
		rows = after(rows, s.last.Start)
	}
	out, _ := RegularizeSeries(prev, Series{Candles: rows, Broken: hs.Broken}, math.MaxInt)
	if len(out) > 0 {
		e.Final = append(e.Final, out...)
		s.last, s.known = out[len(out)-1], true
	}
	if s.known {
		s.pending = after(s.pending, s.last.Start)
		if s.cur != nil && !s.cur.Start.After(s.last.Start) {
			s.cur = nil
		}
	}
	a.tryAnchor(s, &e)
	return e
}

// Expire finalises the running candles whose interval ended more than the
// grace period ago by the server's clock, provided a frame arrived after the
// end: on one connection frames come in order, so that frame proves every
// update of the candle has been read. A stalled connection proves nothing and
// its candles wait for the reconnect's heal.
func (a *Assembler) Expire(now time.Time) []Emit {
	var out []Emit
	serverNow := now.Add(a.offset)
	lastFrame := a.lastFrame.Add(a.offset)
	for _, s := range a.series {
		if s.cur == nil {
			continue
		}
		end := s.cur.End()
		if serverNow.Before(end.Add(a.grace)) || lastFrame.Before(end) {
			continue
		}
		var e Emit
		a.finalise(s, *s.cur, &e)
		s.cur = nil
		if len(e.Final) > 0 {
			out = append(out, e)
		}
	}
	return out
}

// Running returns the running candle of sym.
func (a *Assembler) Running(sym string) (streams.Candle, bool) {
	s := a.series[sym]
	if s == nil || s.cur == nil {
		return streams.Candle{}, false
	}
	return *s.cur, true
}
