package streams

import (
	stdjson "encoding/json"
	"fmt"
	"testing"
	"time"
)

// hopEvents are one event of each internal hop as the pipeline makes them:
// a live candle with its ingest hop, the default 15-feature vector with two
// hops, and a prediction with three.
func hopEvents() (Candle, FeatureVector, Prediction) {
	at := time.Date(2026, 12, 2, 15, 4, 0, 0, time.UTC)
	tr := Trace{}.Stamp("ingest", at.Add(time.Minute+137*time.Millisecond))
	c := Candle{Symbol: "BTC/USD", Interval: Interval1m, Start: at, Open: 91234.5, High: 91250.1, Low: 91200, Close: 91241.7,
		VWAP: 91230.25, Volume: 3.14159265, Trades: 57, Quality: QualityLive, Trace: tr}
	names := []string{"ret_1", "ret_5", "ret_15", "ret_60", "sma_ratio_10", "sma_ratio_30", "ema_ratio_12", "ema_ratio_26",
		"rsi_14", "vol_30", "volume_z_30", "range", "tod_sin", "tod_cos", "empty_frac_30"}
	values := []float64{7.891e-05, -0.000412345, 0.0012, -0.0031415, 0.00021, -0.000734, 0.000112, -0.00045,
		0.5714285714285714, 0.000823, -0.4142, 0.000548, 0.9659258262890683, -0.25881904510252074, 0.03333333333333333}
	tr = tr.Stamp("features", at.Add(time.Minute+139*time.Millisecond))
	v := FeatureVector{Symbol: c.Symbol, Interval: c.Interval, Start: at, Close: c.Close, Names: names, Values: values,
		CandleSeq: 123456789, Window: map[Quality]int{QualityLive: 78, QualityBackfilled: 1}, Trace: tr}
	p := Prediction{Symbol: c.Symbol, Interval: c.Interval, Start: at, Target: at.Add(time.Minute), Horizon: 1,
		ModelID: "ols-BTC-USD-1m-20261202T150000Z", Close: c.Close, LogReturn: 0.0000712, PredictedClose: 91248.19,
		Lower: 91120.5, Upper: 91375.9, CandleSeq: 123456789, Window: v.Window,
		Trace: tr.Stamp("predictor", at.Add(time.Minute+141*time.Millisecond))}
	return c, v, p
}

func benchHop[T any, PT interface {
	*T
	Event
}](b *testing.B, e PT, encode func(Event) ([]byte, error), decode func([]byte) (T, error)) {
	data, err := encode(e)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := encode(e); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(data)), "bytes")
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decode(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// stdEncode and stdDecode are Encode and Decode as they were before this
// package had its own codec: encoding/json, with the same version stamp and
// validation.
func stdEncode(e Event) ([]byte, error) {
	e.schema().V = SchemaVersion
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return stdjson.Marshal(e)
}

func stdDecode[T any, PT interface {
	*T
	Event
}](data []byte) (T, error) {
	var v T
	if err := stdjson.Unmarshal(data, &v); err != nil {
		return v, err
	}
	if PT(&v).schema().V != SchemaVersion {
		return v, fmt.Errorf("version %d", PT(&v).schema().V)
	}
	return v, PT(&v).Validate()
}

// BenchmarkHop is the encode and decode cost of each internal hop's event:
// stdlib is encoding/json as before, bus is what NewMsg and Decode do now
// (JSON through this package's codec for the user-facing candle and
// prediction, binary for the vector), json the vector in JSON for
// comparison.
func BenchmarkHop(b *testing.B) {
	c, v, p := hopEvents()
	b.Run("candle/stdlib", func(b *testing.B) { benchHop(b, &c, stdEncode, stdDecode[Candle]) })
	b.Run("candle/bus", func(b *testing.B) { benchHop(b, &c, Encode, Decode[Candle]) })
	b.Run("features/stdlib", func(b *testing.B) { benchHop(b, &v, stdEncode, stdDecode[FeatureVector]) })
	b.Run("features/json", func(b *testing.B) { benchHop(b, &v, Encode, Decode[FeatureVector]) })
	b.Run("features/bus", func(b *testing.B) { benchHop(b, &v, EncodeBinary, Decode[FeatureVector]) })
	b.Run("prediction/stdlib", func(b *testing.B) { benchHop(b, &p, stdEncode, stdDecode[Prediction]) })
	b.Run("prediction/bus", func(b *testing.B) { benchHop(b, &p, Encode, Decode[Prediction]) })
}
