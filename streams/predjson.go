package streams

import (
	"math"
	"slices"
	"strconv"
	"time"
)

// A prediction is encoded once per candle and stays JSON (the gateway
// forwards it as stored), so it has a writer of its own: the reflective
// codec was the largest part of the predictor's step in
// BenchmarkPipelineThroughput's profile. The bytes are those of
// encoding/json (TestPredictionJSONMatchesStdlib); anything this writer
// does not handle (a string to escape, a float JSON cannot hold, a time
// outside years 0-9999) gives up, and Encode takes the reflective codec.

// appendPredictionJSON appends p as encoding/json would, or reports false.
func appendPredictionJSON(b []byte, p *Prediction) ([]byte, bool) {
	w := jsonWriter{b: b, ok: true}
	w.raw(`{"v":`)
	w.int(int64(p.V))
	w.raw(`,"symbol":`)
	w.str(p.Symbol)
	if !p.Interval.Valid() {
		return b, false
	}
	w.raw(`,"interval":`)
	w.str(p.Interval.String())
	w.raw(`,"start":`)
	w.time(p.Start)
	w.raw(`,"target":`)
	w.time(p.Target)
	w.raw(`,"horizon":`)
	w.int(int64(p.Horizon))
	w.raw(`,"model_id":`)
	w.str(p.ModelID)
	w.raw(`,"close":`)
	w.float(p.Close)
	w.raw(`,"log_return":`)
	w.float(p.LogReturn)
	w.raw(`,"predicted_close":`)
	w.float(p.PredictedClose)
	w.raw(`,"lower":`)
	w.float(p.Lower)
	w.raw(`,"upper":`)
	w.float(p.Upper)
	w.raw(`,"candle_seq":`)
	w.b = strconv.AppendUint(w.b, p.CandleSeq, 10)
	if len(p.Window) > 0 {
		w.raw(`,"window_quality":{`)
		keys := make([]Quality, 0, len(p.Window))
		for q := range p.Window {
			keys = append(keys, q)
		}
		slices.Sort(keys)
		for i, q := range keys {
			if i > 0 {
				w.raw(",")
			}
			w.str(string(q))
			w.raw(":")
			w.int(int64(p.Window[q]))
		}
		w.raw("}")
	}
	if len(p.Trace) > 0 {
		w.raw(`,"trace":[`)
		for i, h := range p.Trace {
			if i > 0 {
				w.raw(",")
			}
			w.raw(`{"stage":`)
			w.str(h.Stage)
			w.raw(`,"at":`)
			w.time(h.At)
			w.raw("}")
		}
		w.raw("]")
	}
	if p.Model != "" {
		w.raw(`,"model":`)
		w.str(p.Model)
	}
	if p.Sigma != 0 {
		w.raw(`,"sigma":`)
		w.float(p.Sigma)
	}
	if len(p.Forecasts) > 0 {
		w.raw(`,"forecasts":[`)
		for i := range p.Forecasts {
			if i > 0 {
				w.raw(",")
			}
			w.horizon(&p.Forecasts[i])
		}
		w.raw("]")
	}
	w.raw("}")
	if !w.ok {
		return b, false
	}
	return w.b, true
}

func (w *jsonWriter) horizon(f *HorizonForecast) {
	w.raw(`{"horizon":`)
	w.int(int64(f.Horizon))
	w.raw(`,"target":`)
	w.time(f.Target)
	w.raw(`,"model":`)
	w.str(f.Model)
	w.raw(`,"model_id":`)
	w.str(f.ModelID)
	w.raw(`,"log_return":`)
	w.float(f.LogReturn)
	w.raw(`,"predicted_close":`)
	w.float(f.PredictedClose)
	w.raw(`,"sigma":`)
	w.float(f.Sigma)
	if f.VolatilityModel != "" {
		w.raw(`,"volatility_model":`)
		w.str(f.VolatilityModel)
	}
	w.raw(`,"ready":`)
	w.b = strconv.AppendBool(w.b, f.Ready)
	if len(f.Intervals) > 0 {
		w.raw(`,"intervals":[`)
		for i, iv := range f.Intervals {
			if i > 0 {
				w.raw(",")
			}
			w.raw(`{"level":`)
			w.float(iv.Level)
			w.raw(`,"lower":`)
			w.float(iv.Lower)
			w.raw(`,"upper":`)
			w.float(iv.Upper)
			if iv.Coverage != nil {
				w.raw(`,"coverage":`)
				w.float(*iv.Coverage)
			}
			w.raw(`,"covered":`)
			w.int(int64(iv.Covered))
			w.raw("}")
		}
		w.raw("]")
	}
	if f.Failing {
		w.raw(`,"failing":true`)
	}
	if f.FailingReason != "" {
		w.raw(`,"failing_reason":`)
		w.str(f.FailingReason)
	}
	w.raw("}")
}

// jsonWriter appends JSON values; ok turns false at the first value it
// does not write exactly as encoding/json would.
type jsonWriter struct {
	b  []byte
	ok bool
	// floats are the first distinct floats written and where their text
	// is in b: a prediction repeats its close, point forecast, bounds,
	// sigma and interval levels across its horizons (11 of its 39
	// floats), and copying their text is cheaper than the shortest
	// formatting again.
	floats  [12]floatText
	nfloats int
}

type floatText struct {
	bits     uint64
	from, to int
}

func (w *jsonWriter) raw(s string) { w.b = append(w.b, s...) }

func (w *jsonWriter) int(v int64) { w.b = strconv.AppendInt(w.b, v, 10) }

// str writes s when it needs no escaping: printable ASCII other than the
// quote, the backslash and the characters encoding/json escapes for HTML.
func (w *jsonWriter) str(s string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			w.ok = false
			return
		}
	}
	w.b = append(w.b, '"')
	w.b = append(w.b, s...)
	w.b = append(w.b, '"')
}

// float is encoding/json's float64 format: the shortest representation,
// exponent form only below 1e-6 and from 1e21, with a two-digit negative
// exponent trimmed to one.
func (w *jsonWriter) float(f float64) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		w.ok = false
		return
	}
	bits := math.Float64bits(f)
	for _, t := range w.floats[:w.nfloats] {
		if t.bits == bits {
			w.b = append(w.b, w.b[t.from:t.to]...)
			return
		}
	}
	from := len(w.b)
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	w.b = strconv.AppendFloat(w.b, f, format, -1, 64)
	if format == 'e' {
		if n := len(w.b); n >= 4 && w.b[n-4] == 'e' && w.b[n-3] == '-' && w.b[n-2] == '0' {
			w.b[n-2] = w.b[n-1]
			w.b = w.b[:n-1]
		}
	}
	if w.nfloats < len(w.floats) && f != 0 {
		w.floats[w.nfloats] = floatText{bits: bits, from: from, to: len(w.b)}
		w.nfloats++
	}
}

// time is time.Time's MarshalJSON, which refuses years outside 0-9999 and
// zone offsets in seconds or of a day or more.
func (w *jsonWriter) time(t time.Time) {
	_, off := t.Zone()
	if off == 0 {
		w.utc(t)
		return
	}
	if y := t.Year(); y < 0 || y > 9999 {
		w.ok = false
		return
	}
	if off%60 != 0 || off <= -24*3600 || off >= 24*3600 {
		w.ok = false
		return
	}
	w.b = append(w.b, '"')
	w.b = t.AppendFormat(w.b, time.RFC3339Nano)
	w.b = append(w.b, '"')
}

// utc writes a time at offset zero (every time the pipeline makes) as
// RFC3339Nano does, without the layout's interpretation: a prediction has
// seven times, and AppendFormat was a fifth of its encoding.
func (w *jsonWriter) utc(t time.Time) {
	y, mo, d := t.Date()
	if y < 0 || y > 9999 {
		w.ok = false
		return
	}
	h, mi, s := t.Clock()
	b := append(w.b, '"', byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-')
	b = append(b, byte('0'+mo/10), byte('0'+mo%10), '-', byte('0'+d/10), byte('0'+d%10), 'T')
	b = append(b, byte('0'+h/10), byte('0'+h%10), ':', byte('0'+mi/10), byte('0'+mi%10), ':', byte('0'+s/10), byte('0'+s%10))
	if ns := t.Nanosecond(); ns != 0 {
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i > 0; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for frac[n-1] == '0' {
			n--
		}
		b = append(b, frac[:n]...)
	}
	w.b = append(b, 'Z', '"')
}
