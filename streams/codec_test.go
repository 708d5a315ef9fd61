package streams

import (
	"errors"
	"maps"
	"math"
	"slices"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protowire"
)

// sameVector compares two vectors field by field, times as instants.
func sameVector(a, b FeatureVector) bool {
	bits := func(x, y float64) bool { return math.Float64bits(x) == math.Float64bits(y) }
	return a.V == b.V && a.Symbol == b.Symbol && a.Interval == b.Interval && a.Start.Equal(b.Start) &&
		bits(a.Close, b.Close) && slices.Equal(a.Names, b.Names) && slices.EqualFunc(a.Values, b.Values, bits) &&
		a.CandleSeq == b.CandleSeq && maps.Equal(a.Window, b.Window) &&
		slices.EqualFunc(a.Trace, b.Trace, func(x, y Hop) bool { return x.Stage == y.Stage && x.At.Equal(y.At) })
}

func TestFeatureVectorBinaryRoundTrip(t *testing.T) {
	_, v, _ := hopEvents()
	v.Window["odd"] = 3 // a key this version does not know still round-trips
	data, err := EncodeBinary(&v)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode[FeatureVector](data)
	if err != nil {
		t.Fatal(err)
	}
	if !sameVector(got, v) {
		t.Fatalf("decoded %+v\nencoded %+v", got, v)
	}
	again, _ := EncodeBinary(&got)
	if string(again) != string(data) {
		t.Fatal("a decoded vector encodes to other bytes")
	}
	js, err := Encode(&v)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) >= len(js) {
		t.Fatalf("binary %d bytes, JSON %d", len(data), len(js))
	}
}

// TestDecodeReadsStoredJSON: vectors stored as JSON before the binary
// encoding are still read, by the same Decode.
func TestDecodeReadsStoredJSON(t *testing.T) {
	stored := `{"v":1,"symbol":"BTC/USD","interval":"1m","start":"2026-12-02T15:04:00Z","close":91241.7,` +
		`"names":["ret_1","rsi_14"],"values":[7.891e-05,0.5714285714285714],"candle_seq":42,` +
		`"window_quality":{"live":78,"backfilled":1},"trace":[{"stage":"ingest","at":"2026-12-02T15:05:00.137Z"}]}`
	v, err := Decode[FeatureVector]([]byte(stored))
	if err != nil {
		t.Fatal(err)
	}
	if v.Symbol != "BTC/USD" || v.CandleSeq != 42 || v.Values[1] != 0.5714285714285714 || v.Window[QualityLive] != 78 || len(v.Trace) != 1 {
		t.Fatalf("%+v", v)
	}
	data, err := EncodeBinary(&v)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := Decode[FeatureVector](data); err != nil || !sameVector(b, v) {
		t.Fatalf("binary of a stored vector: %+v, %v", b, err)
	}
}

func TestNewMsgEncoding(t *testing.T) {
	c, v, p := hopEvents()
	msg, err := NewMsg(&v)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Header.Get(HeaderContentType) != ContentTypeFeatureVector || !isBinary(msg.Data) || msg.Header.Get(jetstream.MsgIDHeader) != v.MsgID() {
		t.Fatalf("vector message: headers %v, data %q", msg.Header, msg.Data)
	}
	for _, e := range []Event{&c, &p} {
		msg, err := NewMsg(e)
		if err != nil {
			t.Fatal(err)
		}
		if msg.Header.Get(HeaderContentType) != "" || msg.Data[0] != '{' {
			t.Fatalf("%T is user-facing and stays JSON: headers %v, data %q", e, msg.Header, msg.Data)
		}
	}
	if _, err := EncodeBinary(&c); !errors.Is(err, ErrNoBinary) {
		t.Fatalf("binary candle: %v", err)
	}
}

func TestDecodeBinaryRejects(t *testing.T) {
	_, v, _ := hopEvents()
	good, _ := EncodeBinary(&v)
	nan := v
	nan.Values = slices.Clone(v.Values)
	nan.Values[3] = math.NaN()
	withNaN := nan.appendBinary(nil) // EncodeBinary would refuse it
	v2 := v
	v2.V = 2
	tests := []struct {
		name string
		data []byte
	}{
		{"truncated", good[:len(good)-3]},
		{"cut inside a varint", append(good[:len(good):len(good)], protowireTag(fvCandleSeq, protowire.VarintType), 0x80)},
		{"wrong wire type", append([]byte{0x08, 0x01}, protowireTag(fvSymbol, protowire.VarintType), 0x01)},
		{"packed values not a multiple of 8", append(v.appendBinary(nil), protowireTag(fvValues, protowire.BytesType), 3, 1, 2, 3)},
		{"another schema version", v2.appendBinary(nil)},
		{"an invalid value", withNaN},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode[FeatureVector](tt.data); !errors.Is(err, ErrInvalidEvent) || !errors.Is(err, ErrPermanent) {
				t.Fatalf("got %v, want a permanent invalid event", err)
			}
		})
	}
}

func protowireTag(num protowire.Number, typ protowire.Type) byte {
	return byte(protowire.EncodeTag(num, typ))
}

// FuzzFeatureVectorCodec: whatever the bytes, Decode returns a valid vector
// or a permanent error, and a vector it accepts (from JSON or binary) comes
// back the same through the binary encoding.
func FuzzFeatureVectorCodec(f *testing.F) {
	_, v, _ := hopEvents()
	bin, _ := EncodeBinary(&v)
	js, _ := Encode(&v)
	f.Add(bin)
	f.Add(js)
	f.Add(bin[:len(bin)/2])
	f.Add([]byte{0x08, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := Decode[FeatureVector](data)
		if err != nil {
			if !errors.Is(err, ErrPermanent) {
				t.Fatalf("not permanent: %v", err)
			}
			return
		}
		again, err := EncodeBinary(&got)
		if err != nil {
			t.Fatalf("a decoded vector does not encode: %v", err)
		}
		back, err := Decode[FeatureVector](again)
		if err != nil {
			t.Fatalf("its binary does not decode: %v", err)
		}
		if !sameVector(back, got) {
			t.Fatalf("round trip changed it:\n%+v\n%+v", got, back)
		}
	})
}
