package streams

import (
	stdjson "encoding/json"
	"reflect"
	"testing"
	"time"

	fastjson "github.com/segmentio/encoding/json"
)

// TestJSONMatchesStdlib: the JSON codec writes, for every kind of event,
// the bytes encoding/json writes, including the floats at the edges of
// its two formats and the strings it escapes.
func TestJSONMatchesStdlib(t *testing.T) {
	c, v, p := hopEvents()
	at := time.Date(2026, 12, 2, 15, 4, 5, 123456789, time.FixedZone("x", 3600))
	odd := c
	odd.Open, odd.High, odd.Low, odd.Close, odd.VWAP, odd.Volume = 1e-7, 1e21, 1e-7, 123456789012345678, 0.1, 0
	events := []Event{
		&c, &odd, &v, &p,
		&Tick{Candle: c, ReceivedAt: at},
		&Alert{ID: "a1", RuleID: "r<1>", Symbol: "ETH/USD", Interval: Interval5m, Kind: "price_above", Message: "ETH & <b>\u2028 \"quoted\" \\ é \x01",
			Value: -0.0, Threshold: 5e-324, At: at},
		&Job{ID: "j", Kind: JobTrain, Symbol: "BTC/USD", Interval: Interval1h, Params: map[string]string{"b": "</script>", "a": "\t\n"}, RequestedAt: at},
		&AuditEvent{ID: "x", Action: "user.create", Actor: "admin", Outcome: "ok", Detail: "\xff invalid utf-8", At: at},
	}
	for _, e := range events {
		got, err := Encode(e)
		if err != nil {
			t.Fatalf("%T: %v", e, err)
		}
		want, err := stdjson.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Fatalf("%T:\ngot  %s\nwant %s", e, got, want)
		}
	}
}

// FuzzJSONDecodeMatchesStdlib: on any input the JSON codec accepts only
// what encoding/json accepts, decoding the same value, and it reads
// everything encoding/json writes (which is what every event stored on the
// bus was written by). It may refuse malformed input that encoding/json lets
// through: its time parser is stricter (a one-digit hour, say).
func FuzzJSONDecodeMatchesStdlib(f *testing.F) {
	c, v, p := hopEvents()
	for _, e := range []Event{&c, &v, &p} {
		data, _ := stdEncode(e)
		f.Add(data)
	}
	f.Add([]byte(`{"v":1,"symbol":"BTC/USD","interval":"1m","start":"2023-03-01T05:00:00+01:00","open":1e400}`))
	f.Add([]byte(`{"V":1,"SYMBOL":"x","trades":1.5,"close":"1"}`))
	f.Add([]byte(`{"v":1,"symbol":"\ud800","window_quality":{"live":1,"live":2}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		same(t, data, &Candle{}, &Candle{})
		same(t, data, &Prediction{}, &Prediction{})
		same(t, data, &FeatureVector{}, &FeatureVector{})
		same(t, data, &Tick{}, &Tick{})
		same(t, data, &Alert{}, &Alert{})
		same(t, data, &Job{}, &Job{})
		same(t, data, &AuditEvent{}, &AuditEvent{})
	})
}

func same[T any](t *testing.T, data []byte, a, b *T) {
	t.Helper()
	errA, errB := stdjson.Unmarshal(data, a), fastjson.Unmarshal(data, b)
	if errB == nil && (errA != nil || !reflect.DeepEqual(a, b)) {
		t.Fatalf("%T %q:\nencoding/json %+v, %v\ncodec         %+v", a, data, a, errA, b)
	}
	if errA != nil {
		return
	}
	canon, err := stdjson.Marshal(a)
	if err != nil {
		return // a value encoding/json cannot write back (a time past year 9999)
	}
	var x, y T
	errX, errY := stdjson.Unmarshal(canon, &x), fastjson.Unmarshal(canon, &y)
	if errX != nil || errY != nil || !reflect.DeepEqual(x, y) {
		t.Fatalf("%T %q: encoding/json %+v, %v\ncodec         %+v, %v", a, canon, x, errX, y, errY)
	}
}
