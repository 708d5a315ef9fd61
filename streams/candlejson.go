package streams

import (
	"strconv"
	"time"
	"unsafe"
)

// CandleDecoder decodes candles as Decode[Candle] does, faster, for a
// reader of many candles (a backtest reads a whole MARKET range): the
// JSON Encode writes (the twelve fields, in any order, no white space,
// a trace of UTC hops, plain ASCII strings, a start in whole UTC seconds) is parsed
// in place with no allocation once the symbol is known; anything else
// goes to Decode, so what is accepted, the values and the errors are
// Decode's. The zero value is ready; a decoder is for one goroutine.
type CandleDecoder struct {
	symbol string // the last symbol, reused while candles repeat it
	// lastStage is the last trace stage, reused the same way.
	lastStage string
}

// Decode parses and validates one candle.
func (d *CandleDecoder) Decode(data []byte) (Candle, error) {
	var c Candle
	if !d.parse(data, &c) {
		return Decode[Candle](data)
	}
	if c.V != SchemaVersion {
		// Decode's message and error, from the one place that words it.
		return Decode[Candle](data)
	}
	// As Decode, the value comes with its validation error.
	return c, c.Validate()
}

// The fields a candle must have for the fast path, one bit each.
const (
	cfV = 1 << iota
	cfSymbol
	cfInterval
	cfStart
	cfOpen
	cfHigh
	cfLow
	cfClose
	cfVWAP
	cfVolume
	cfTrades
	cfQuality
	cfAll = 1<<iota - 1
	// cfTrace is the one field that may be missing: omitted when empty.
	cfTrace = cfAll + 1
)

// parse fills c from data when data has the shape Encode writes, and
// reports whether it did; false leaves the whole decision to Decode.
func (d *CandleDecoder) parse(data []byte, c *Candle) bool {
	p := candleParser{b: data}
	if !p.byte('{') {
		return false
	}
	seen := 0
	for {
		key, ok := p.str()
		if !ok || !p.byte(':') {
			return false
		}
		var bit int
		switch string(key) {
		case "v":
			bit = cfV
			n, ok := p.int()
			if !ok || int64(int(n)) != n {
				return false
			}
			c.V = int(n)
		case "symbol":
			bit = cfSymbol
			s, ok := p.str()
			if !ok {
				return false
			}
			if string(s) != d.symbol {
				d.symbol = string(s)
			}
			c.Symbol = d.symbol
		case "interval":
			bit = cfInterval
			s, ok := p.str()
			if !ok {
				return false
			}
			iv, ok := intervalsByName[string(s)]
			if !ok {
				return false
			}
			c.Interval = iv
		case "start":
			bit = cfStart
			s, ok := p.str()
			if !ok {
				return false
			}
			if c.Start, ok = parseUTCSeconds(s); !ok {
				return false
			}
		case "open", "high", "low", "close", "vwap", "volume":
			f, ok := p.float()
			if !ok {
				return false
			}
			switch string(key) {
			case "open":
				bit, c.Open = cfOpen, f
			case "high":
				bit, c.High = cfHigh, f
			case "low":
				bit, c.Low = cfLow, f
			case "close":
				bit, c.Close = cfClose, f
			case "vwap":
				bit, c.VWAP = cfVWAP, f
			default:
				bit, c.Volume = cfVolume, f
			}
		case "trades":
			bit = cfTrades
			if c.Trades, ok = p.int(); !ok {
				return false
			}
		case "quality":
			bit = cfQuality
			s, ok := p.str()
			if !ok {
				return false
			}
			switch string(s) {
			case string(QualityLive):
				c.Quality = QualityLive
			case string(QualityBackfilled):
				c.Quality = QualityBackfilled
			case string(QualityFilled):
				c.Quality = QualityFilled
			case string(QualityImported):
				c.Quality = QualityImported
			default:
				return false
			}
		case "trace":
			// A live candle's: ingest stamps its hop on each.
			bit = cfTrace
			if c.Trace, ok = d.trace(&p); !ok {
				return false
			}
		default:
			return false // a field Decode may know of
		}
		if seen&bit != 0 {
			return false // a repeated key: Decode's rule for which wins
		}
		seen |= bit
		if p.byte(',') {
			continue
		}
		return p.byte('}') && p.i == len(p.b) && seen&cfAll == cfAll
	}
}

// trace is a trace as Encode writes it: one or more hops, each
// {"stage":...,"at":...} in that order, at in UTC (Stamp's).
func (d *CandleDecoder) trace(p *candleParser) (Trace, bool) {
	if !p.byte('[') {
		return nil, false // null, or not a list: Decode's
	}
	var t Trace
	for {
		if !p.byte('{') {
			return nil, false // [] among them: Decode's empty trace
		}
		k, ok := p.str()
		if !ok || string(k) != "stage" || !p.byte(':') {
			return nil, false
		}
		stage, ok := p.str()
		if !ok || !p.byte(',') {
			return nil, false
		}
		if k, ok = p.str(); !ok || string(k) != "at" || !p.byte(':') {
			return nil, false
		}
		at, ok := p.str()
		if !ok || !p.byte('}') {
			return nil, false
		}
		h := Hop{Stage: d.stage(stage)}
		if h.At, ok = parseUTC(at); !ok {
			return nil, false
		}
		if t == nil {
			t = make(Trace, 0, 1) // a live candle has ingest's hop only; Stamp copies
		}
		t = append(t, h)
		if p.byte(']') {
			return t, true
		}
		if !p.byte(',') {
			return nil, false
		}
	}
}

// stage is s as a string, the last one's while hops repeat it.
func (d *CandleDecoder) stage(s []byte) string {
	if string(s) != d.lastStage {
		d.lastStage = string(s)
	}
	return d.lastStage
}

type candleParser struct {
	b []byte
	i int
}

func (p *candleParser) byte(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// str is a string with no escape, no control character and only ASCII,
// the strings whose JSON decoding is their bytes.
func (p *candleParser) str() ([]byte, bool) {
	if !p.byte('"') {
		return nil, false
	}
	start := p.i
	for ; p.i < len(p.b); p.i++ {
		switch c := p.b[p.i]; {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			return s, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, false
		}
	}
	return nil, false
}

// number is a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?;
// integer reports that it has neither fraction nor exponent.
func (p *candleParser) number() (num []byte, integer, ok bool) {
	start := p.i
	p.byte('-')
	switch {
	case p.byte('0'):
	case p.digits() == 0:
		return nil, false, false
	}
	integer = true
	if p.byte('.') {
		if p.digits() == 0 {
			return nil, false, false
		}
		integer = false
	}
	if p.byte('e') || p.byte('E') {
		if !p.byte('+') {
			p.byte('-')
		}
		if p.digits() == 0 {
			return nil, false, false
		}
		integer = false
	}
	return p.b[start:p.i], integer, true
}

func (p *candleParser) digits() int {
	start := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	return p.i - start
}

func (p *candleParser) float() (float64, bool) {
	num, _, ok := p.number()
	if !ok {
		return 0, false
	}
	// strconv rounds correctly, as encoding/json's decoders do, so the
	// bits are theirs; the string does not outlive the call (an error
	// copies it).
	f, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(num), len(num)), 64)
	return f, err == nil
}

func (p *candleParser) int() (int64, bool) {
	num, integer, ok := p.number()
	if !ok || !integer {
		return 0, false
	}
	n, err := strconv.ParseInt(unsafe.String(unsafe.SliceData(num), len(num)), 10, 64)
	return n, err == nil
}

// parseUTC parses 2006-01-02T15:04:05.999999999Z (the fraction optional,
// with no trailing zero: time.Time's MarshalJSON of a UTC time) to what
// its UnmarshalJSON gives.
func parseUTC(s []byte) (time.Time, bool) {
	if len(s) == 20 {
		return parseUTCSeconds(s)
	}
	// .d to .ddddddddd between the seconds and the Z.
	if len(s) < 22 || len(s) > 30 || s[19] != '.' || s[len(s)-1] != 'Z' || s[len(s)-2] == '0' {
		return time.Time{}, false
	}
	ns := 0
	for i := 20; i < 29; i++ {
		d := 0
		if i < len(s)-1 {
			c := s[i]
			if c < '0' || c > '9' {
				return time.Time{}, false
			}
			d = int(c - '0')
		}
		ns = ns*10 + d
	}
	sec := [20]byte(s[:20])
	sec[19] = 'Z'
	t, ok := parseUTCSeconds(sec[:])
	if !ok {
		return time.Time{}, false
	}
	return t.Add(time.Duration(ns)), true
}

// parseUTCSeconds parses 2006-01-02T15:04:05Z, the form Encode gives a
// candle's start, to what time.Time's UnmarshalJSON gives for it.
func parseUTCSeconds(s []byte) (time.Time, bool) {
	if len(s) != 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[19] != 'Z' {
		return time.Time{}, false
	}
	num := func(from, to int) (int, bool) {
		n := 0
		for _, c := range s[from:to] {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	y, ok1 := num(0, 4)
	mo, ok2 := num(5, 7)
	d, ok3 := num(8, 10)
	h, ok4 := num(11, 13)
	mi, ok5 := num(14, 16)
	sec, ok6 := num(17, 19)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 59 {
		return time.Time{}, false
	}
	t := time.Date(y, time.Month(mo), d, h, mi, sec, 0, time.UTC)
	if t.Day() != d { // the 31st of a 30-day month, which time.Parse refuses
		return time.Time{}, false
	}
	return t, true
}
