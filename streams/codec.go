package streams

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// The encodings on the bus. Events a user can see (candles, ticks and
// predictions, which the gateway forwards as they are stored, alerts, jobs,
// audit) are JSON. Feature vectors travel only between the features worker and
// the predictor and trainer, and are most of a hop's decoding cost in JSON
// (fifteen names and values, a map), so FEATURES stores them in the
// protobuf wire format, with a header naming it for anyone reading the
// stream with the nats CLI; Decode reads either, so vectors stored as JSON
// before stay readable.

// HeaderContentType names the encoding of a message that is not JSON.
const HeaderContentType = "Content-Type"

// ContentTypeFeatureVector is the header value of a binary feature vector:
// the protobuf wire format of the message below, field numbers fixed.
//
//	message FeatureVector {
//	  int64 v = 1; string symbol = 2; int64 interval = 3; Timestamp start = 4;
//	  double close = 6; repeated string names = 7; repeated double values = 8 [packed];
//	  uint64 candle_seq = 9; map<string, int64> window_quality = 10; repeated Hop trace = 11;
//	}
//	message Hop { string stage = 1; Timestamp at = 2; }
//	message Timestamp { int64 seconds = 1; int32 nanos = 2; } // google.protobuf.Timestamp
const ContentTypeFeatureVector = "application/x-protobuf; type=cryptostream.FeatureVector"

const (
	fvV protowire.Number = iota + 1
	fvSymbol
	fvInterval
	fvStart
	_
	fvClose
	fvNames
	fvValues
	fvCandleSeq
	fvWindow
	fvTrace
)

// binaryEvent is an event with a compact encoding.
type binaryEvent interface {
	Event
	appendBinary(b []byte) []byte
	decodeBinary(data []byte) error
	contentType() string
}

// EncodeBinary validates e, stamps the schema version and encodes it in its
// compact binary form; only events internal to the pipeline have one, the
// others get ErrNoBinary.
func EncodeBinary(e Event) ([]byte, error) {
	be, ok := e.(binaryEvent)
	if !ok {
		return nil, fmt.Errorf("%w: %T", ErrNoBinary, e)
	}
	return appendBinaryEvent(nil, be)
}

// appendBinaryEvent is EncodeBinary writing into buf's room.
func appendBinaryEvent(buf []byte, be binaryEvent) ([]byte, error) {
	be.schema().V = SchemaVersion
	if err := be.Validate(); err != nil {
		return nil, err
	}
	if cap(buf) == 0 {
		buf = make([]byte, 0, 512)
	}
	return be.appendBinary(buf[:0]), nil
}

// ErrNoBinary reports an event that is only ever JSON.
var ErrNoBinary = fmt.Errorf("streams: no binary encoding")

// isBinary tells the protobuf form from JSON, which starts with a brace or
// white space: every binary event starts with its version, field 1.
func isBinary(data []byte) bool {
	return len(data) > 0 && data[0] == byte(protowire.EncodeTag(fvV, protowire.VarintType))
}

func (f *FeatureVector) contentType() string { return ContentTypeFeatureVector }

func (f *FeatureVector) appendBinary(b []byte) []byte {
	b = appendVarintField(b, fvV, uint64(int64(f.V)))
	b = appendStringField(b, fvSymbol, f.Symbol)
	b = appendVarintField(b, fvInterval, uint64(int64(f.Interval)))
	b = appendTimestamp(b, fvStart, f.Start)
	b = protowire.AppendTag(b, fvClose, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, math.Float64bits(f.Close))
	for _, n := range f.Names {
		b = appendStringField(b, fvNames, n)
	}
	if len(f.Values) > 0 {
		b = protowire.AppendTag(b, fvValues, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(8*len(f.Values)))
		for _, v := range f.Values {
			b = protowire.AppendFixed64(b, math.Float64bits(v))
		}
	}
	b = appendVarintField(b, fvCandleSeq, f.CandleSeq)
	b = appendWindow(b, fvWindow, f.Window)
	return appendTrace(b, fvTrace, f.Trace)
}

func (f *FeatureVector) decodeBinary(data []byte) error { return f.decodeBinaryLike(data, nil) }

// VectorDecoder decodes feature vectors as Decode[FeatureVector] does,
// sharing the strings of the vector before (its names, symbol and trace
// stages) and its Window map when the next carries the same ones, as the
// vectors of a series do: the fifteen names are most of a binary vector's
// strings, and a reader of many vectors (the predictor stage) otherwise
// copies them for every one. The Names and Window of what it returns must
// not be modified. The zero value is ready; a decoder is for one
// goroutine.
type VectorDecoder struct {
	prev vectorShape
}

// vectorShape is what a decoded vector lends the next: its strings, its
// window and how many hops it had, to size the next's trace.
type vectorShape struct {
	symbol    string
	names     []string
	stages    []string
	windowMap map[Quality]int
	trace     int
}

// Decode parses and validates one vector, binary or JSON.
func (d *VectorDecoder) Decode(data []byte) (FeatureVector, error) {
	if !isBinary(data) {
		return Decode[FeatureVector](data)
	}
	var v FeatureVector
	if err := v.decodeBinaryLike(data, &d.prev); err != nil {
		return v, fmt.Errorf("%w: decode binary %T: %w", ErrInvalidEvent, v, err)
	}
	if v.V != SchemaVersion {
		return v, fmt.Errorf("%w: %T schema version %d, want %d", ErrInvalidEvent, v, v.V, SchemaVersion)
	}
	if err := v.Validate(); err != nil {
		return v, err
	}
	d.prev.symbol, d.prev.names = v.Symbol, v.Names
	d.prev.windowMap, d.prev.trace = v.Window, len(v.Trace)
	d.prev.stages = d.prev.stages[:0]
	for _, h := range v.Trace {
		d.prev.stages = append(d.prev.stages, h.Stage)
	}
	return v, nil
}

// decodeBinaryLike decodes data in one pass, taking prev's strings where
// data has the same (prev may be nil). Any other string goes to an arena
// of len(data) bytes, which holds every string data can carry, so it
// never moves. (A first pass that sized everything was half of a
// vector's decode.)
func (f *FeatureVector) decodeBinaryLike(data []byte, prev *vectorShape) error {
	if prev == nil {
		prev = &vectorShape{}
	}
	ss := eventStrings{size: len(data)}
	*f = FeatureVector{}
	// The window's counts, held here until the end, where they are the
	// vector before's map when equal (a window of one quality stays the
	// same from one candle to the next) and a map of their own otherwise.
	var win [8]qualityCount
	nwin := 0
	names := 0
	// shared: the names so far are prev's, so Names is prev.names[:names].
	shared := prev.names != nil
	for r := (wire{data}); len(r.data) > 0; {
		fl, err := r.next()
		if err != nil {
			return err
		}
		switch fl.num {
		case fvV:
			err = fl.want(protowire.VarintType)
			f.V = int(int64(fl.x))
		case fvSymbol:
			err = fl.want(protowire.BytesType)
			f.Symbol = ss.get(fl.v, prev.symbol)
		case fvInterval:
			err = fl.want(protowire.VarintType)
			f.Interval = Interval(int64(fl.x))
		case fvStart:
			if err = fl.want(protowire.BytesType); err == nil {
				f.Start, err = decodeTimestamp(fl.v)
			}
		case fvClose:
			err = fl.want(protowire.Fixed64Type)
			f.Close = math.Float64frombits(fl.x)
		case fvNames:
			if err = fl.want(protowire.BytesType); err != nil {
				break
			}
			if shared && names < len(prev.names) && prev.names[names] == string(fl.v) {
				names++
				break
			}
			if f.Names == nil {
				// Fifteen names by default: room for them at once.
				f.Names = make([]string, names, max(len(prev.names), 16))
				copy(f.Names, prev.names[:names])
			}
			shared = false
			var same string
			if i := len(f.Names); i < len(prev.names) {
				same = prev.names[i]
			}
			f.Names = append(f.Names, ss.get(fl.v, same))
		case fvValues:
			if f.Values == nil && fl.typ == protowire.BytesType {
				f.Values = make([]float64, 0, len(fl.v)/8)
			}
			f.Values, err = appendDoubles(f.Values, fl)
		case fvCandleSeq:
			err = fl.want(protowire.VarintType)
			f.CandleSeq = fl.x
		case fvWindow:
			if err = fl.want(protowire.BytesType); err != nil {
				break
			}
			var q qualityCount
			if q, err = decodeWindowEntry(fl.v, &ss); err != nil {
				break
			}
			if nwin < len(win) {
				win[nwin] = q
				nwin++
				break
			}
			if f.Window == nil {
				f.Window = make(map[Quality]int, 2*len(win))
				for _, e := range win {
					f.Window[e.q] = e.n
				}
			}
			f.Window[q.q] = q.n
		case fvTrace:
			if err = fl.want(protowire.BytesType); err == nil {
				if f.Trace == nil {
					// A trace has up to four hops (ingest to the gateway).
					f.Trace = make(Trace, 0, cmp.Or(prev.trace, 4))
				}
				var same string
				if i := len(f.Trace); i < len(prev.stages) {
					same = prev.stages[i]
				}
				var h Hop
				if h, err = decodeHop(fl.v, &ss, same); err == nil {
					f.Trace = append(f.Trace, h)
				}
			}
		}
		if err != nil {
			return err
		}
	}
	if f.Window == nil && nwin > 0 {
		if sameCounts(prev.windowMap, win[:nwin]) {
			f.Window = prev.windowMap
		} else {
			f.Window = make(map[Quality]int, nwin)
			for _, e := range win[:nwin] {
				f.Window[e.q] = e.n
			}
		}
	}
	if shared && names > 0 {
		if names == len(prev.names) {
			f.Names = prev.names
		} else {
			f.Names = prev.names[:names:names]
		}
	}
	return nil
}

// eventStrings are the strings of one decoded event: the event before's
// where they are equal, else copies in one arena of the message's size,
// which every string in the message fits in, so it never moves.
type eventStrings struct {
	a    arena
	size int
}

func (s *eventStrings) get(v []byte, shared string) string {
	if shared == string(v) {
		return shared
	}
	if s.a.Cap() == 0 {
		s.a.Grow(s.size)
	}
	return s.a.str(v)
}

// arena holds the strings of one decoded event in one allocation.
type arena struct{ strings.Builder }

// str copies p into the arena. The caller reserved room for every string
// first (eventStrings: the whole message), so the buffer never moves and
// earlier strings stay valid.
func (a *arena) str(p []byte) string {
	at := a.Len()
	a.Write(p)
	return a.String()[at:]
}

// wire reads the fields of a protobuf message.
type wire struct{ data []byte }

// field is one field: the bytes of a length-delimited one, the value of a
// varint or fixed one.
type field struct {
	num protowire.Number
	typ protowire.Type
	v   []byte
	x   uint64
}

func (f field) want(typ protowire.Type) error {
	if f.typ != typ {
		return fmt.Errorf("field %d: wire type %d, want %d", f.num, f.typ, typ)
	}
	return nil
}

func (r *wire) next() (field, error) {
	num, typ, n := protowire.ConsumeTag(r.data)
	if n < 0 {
		return field{}, protowire.ParseError(n)
	}
	r.data = r.data[n:]
	f := field{num: num, typ: typ}
	switch typ {
	case protowire.VarintType:
		f.x, n = protowire.ConsumeVarint(r.data)
	case protowire.Fixed64Type:
		f.x, n = protowire.ConsumeFixed64(r.data)
	case protowire.Fixed32Type:
		var x32 uint32
		x32, n = protowire.ConsumeFixed32(r.data)
		f.x = uint64(x32)
	case protowire.BytesType:
		f.v, n = protowire.ConsumeBytes(r.data)
	default:
		n = protowire.ConsumeFieldValue(num, typ, r.data)
	}
	if n < 0 {
		return field{}, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
	}
	r.data = r.data[n:]
	return f, nil
}

func appendDoubles(out []float64, f field) ([]float64, error) {
	switch v := f.v; f.typ {
	case protowire.Fixed64Type:
		return append(out, math.Float64frombits(f.x)), nil
	case protowire.BytesType:
		if len(v)%8 != 0 {
			return out, fmt.Errorf("packed doubles of %d bytes", len(v))
		}
		for ; len(v) > 0; v = v[8:] {
			u, _ := protowire.ConsumeFixed64(v)
			out = append(out, math.Float64frombits(u))
		}
		return out, nil
	}
	return out, fmt.Errorf("doubles of wire type %d", f.typ)
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendStringField(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// timestampSize is the size of t as a google.protobuf.Timestamp.
func timestampSize(t time.Time) int {
	n := 0
	if s := t.Unix(); s != 0 {
		n += 1 + protowire.SizeVarint(uint64(s))
	}
	if ns := t.Nanosecond(); ns != 0 {
		n += 1 + protowire.SizeVarint(uint64(ns))
	}
	return n
}

func appendTimestamp(b []byte, num protowire.Number, t time.Time) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(timestampSize(t)))
	return appendTimestampBody(b, t)
}

func appendTimestampBody(b []byte, t time.Time) []byte {
	b = appendVarintField(b, 1, uint64(t.Unix()))
	return appendVarintField(b, 2, uint64(t.Nanosecond()))
}

// decodeTimestamp gives the instant in UTC: an event's times are instants,
// and every producer writes them in UTC.
func decodeTimestamp(data []byte) (time.Time, error) {
	var sec, nsec int64
	for r := (wire{data}); len(r.data) > 0; {
		f, err := r.next()
		if err == nil && (f.num == 1 || f.num == 2) {
			err = f.want(protowire.VarintType)
		}
		if err != nil {
			return time.Time{}, err
		}
		switch f.num {
		case 1:
			sec = int64(f.x)
		case 2:
			nsec = int64(f.x)
		}
	}
	if nsec < 0 || nsec >= 1e9 {
		return time.Time{}, fmt.Errorf("timestamp nanos %d", nsec)
	}
	return time.Unix(sec, nsec).UTC(), nil
}

// appendWindow writes the counts in a fixed order (the known qualities,
// then any other key sorted) so that a vector always encodes to the same
// bytes.
func appendWindow(b []byte, num protowire.Number, w map[Quality]int) []byte {
	entry := func(b []byte, q Quality, n int) []byte {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		size := 1 + protowire.SizeBytes(len(q))
		if n != 0 {
			size += 1 + protowire.SizeVarint(uint64(int64(n)))
		}
		b = protowire.AppendVarint(b, uint64(size))
		b = appendStringField(b, 1, string(q))
		return appendVarintField(b, 2, uint64(int64(n)))
	}
	known := 0
	for _, q := range []Quality{QualityLive, QualityBackfilled, QualityFilled, QualityImported} {
		if n, ok := w[q]; ok {
			b = entry(b, q, n)
			known++
		}
	}
	if known < len(w) {
		for _, q := range slices.Sorted(maps.Keys(w)) {
			if !q.Valid() {
				b = entry(b, q, w[q])
			}
		}
	}
	return b
}

// qualityCount is one entry of a vector's window.
type qualityCount struct {
	q Quality
	n int
}

func decodeWindowEntry(data []byte, ss *eventStrings) (qualityCount, error) {
	var e qualityCount
	for r := (wire{data}); len(r.data) > 0; {
		f, err := r.next()
		if err != nil {
			return e, err
		}
		switch f.num {
		case 1:
			err = f.want(protowire.BytesType)
			e.q = internQuality(f.v, ss)
		case 2:
			err = f.want(protowire.VarintType)
			e.n = int(int64(f.x))
		}
		if err != nil {
			return e, err
		}
	}
	return e, nil
}

// sameCounts reports that entries, as a map, would be m: as many distinct
// keys, each with m's count.
func sameCounts(m map[Quality]int, entries []qualityCount) bool {
	if m == nil || len(m) != len(entries) {
		return false
	}
	for i, e := range entries {
		if n, ok := m[e.q]; !ok || n != e.n {
			return false
		}
		for _, before := range entries[:i] {
			if before.q == e.q {
				return false
			}
		}
	}
	return true
}

// internQuality gives the known qualities without copying their bytes.
func internQuality(v []byte, ss *eventStrings) Quality {
	switch string(v) {
	case string(QualityLive):
		return QualityLive
	case string(QualityBackfilled):
		return QualityBackfilled
	case string(QualityFilled):
		return QualityFilled
	case string(QualityImported):
		return QualityImported
	}
	return Quality(ss.get(v, ""))
}

func appendTrace(b []byte, num protowire.Number, tr Trace) []byte {
	for _, h := range tr {
		ts := timestampSize(h.At)
		b = protowire.AppendTag(b, num, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(protowire.SizeTag(1)+protowire.SizeBytes(len(h.Stage))+protowire.SizeTag(2)+protowire.SizeBytes(ts)))
		b = appendStringField(b, 1, h.Stage)
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(ts))
		b = appendTimestampBody(b, h.At)
	}
	return b
}

func decodeHop(data []byte, ss *eventStrings, stage string) (Hop, error) {
	var h Hop
	for r := (wire{data}); len(r.data) > 0; {
		f, err := r.next()
		if err != nil {
			return h, err
		}
		switch f.num {
		case 1:
			err = f.want(protowire.BytesType)
			h.Stage = ss.get(f.v, stage)
		case 2:
			if err = f.want(protowire.BytesType); err == nil {
				h.At, err = decodeTimestamp(f.v)
			}
		}
		if err != nil {
			return h, err
		}
	}
	return h, nil
}
