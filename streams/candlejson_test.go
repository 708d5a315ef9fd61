package streams

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// candleInputs are candles as Encode writes them and variations around
// the fast path's edges: each must decode as Decode decodes it.
func candleInputs(t testing.TB) []string {
	c, _, _ := hopEvents()
	c.Trace = nil
	enc := func(c Candle) string {
		b, err := Encode(&c)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	plain := enc(c)
	traced, _, _ := hopEvents()
	odd := c
	odd.Open, odd.High, odd.Low, odd.Close, odd.VWAP, odd.Volume = 1e-7, 1e21, 1e-7, 123456789012345678, 0.1, 0
	feb := c
	feb.Start = time.Date(2024, 2, 29, 23, 59, 0, 0, time.UTC)
	rep := func(old, new string) string { return strings.Replace(plain, old, new, 1) }
	in := []string{
		plain, enc(traced), enc(odd), enc(feb),
		rep(`"v":1`, `"v":2`), rep(`"v":1`, `"v":1.0`), rep(`"v":1`, `"v":-0`),
		rep(`"symbol":"BTC/USD"`, `"symbol":"ETH/USD"`), rep(`"symbol":"BTC/USD"`, `"symbol":"BTC\/USD"`),
		rep(`"symbol":"BTC/USD"`, `"symbol":"bad"`), rep(`"symbol":"BTC/USD"`, `"symbol":"BTC/USDé"`),
		rep(`"interval":"1m"`, `"interval":"5m"`), rep(`"interval":"1m"`, `"interval":"2m"`), rep(`"interval":"1m"`, `"interval":1`),
		rep(`"start":"2026-12-02T15:04:00Z"`, `"start":"2026-12-02T15:04:00.5Z"`),
		rep(`"start":"2026-12-02T15:04:00Z"`, `"start":"2026-12-02T16:04:00+01:00"`),
		rep(`"start":"2026-12-02T15:04:00Z"`, `"start":"2026-11-31T15:04:00Z"`),
		rep(`"start":"2026-12-02T15:04:00Z"`, `"start":"2026-12-02T24:00:00Z"`),
		rep(`"start":"2026-12-02T15:04:00Z"`, `"start":"2026-12-02T15:04:60Z"`),
		rep(`"start":"2026-12-02T15:04:00Z"`, `"start":"2126-12-02T15:04:00Z"`), // from the future
		rep(`"open":91234.5`, `"open":9.12345e4`), rep(`"open":91234.5`, `"open":-1`), rep(`"open":91234.5`, `"open":1e400`),
		rep(`"open":91234.5`, `"open":0`), rep(`"open":91234.5`, `"open":01`), rep(`"open":91234.5`, `"open":"1"`),
		rep(`"open":91234.5`, `"open":.5`), rep(`"open":91234.5`, `"open":NaN`),
		rep(`"trades":57`, `"trades":57.0`), rep(`"trades":57`, `"trades":-1`), rep(`"trades":57`, `"trades":1e2`),
		rep(`"trades":57`, `"trades":99999999999999999999`),
		rep(`"quality":"live"`, `"quality":"guessed"`), rep(`"quality":"live"`, `"quality":"filled"`),
		rep(`"quality":"live"`, `"quality":"imported","quality":"live"`), rep(`"quality":"live"`, `"quality":"live","extra":1`),
		rep(`,"quality":"live"`, ``), rep(`{`, `{ `), rep(`{`, ` {`), plain + " ", plain + "x", rep(`"v":1,`, ``) + "",
		`{}`, ``, `{`, `null`, `[]`,
	}
	// Traces: a live candle's, with hops Stamp and Encode could write and
	// shapes only Decode should take.
	tr := enc(traced)
	i := strings.Index(tr, `"trace":`)
	if i < 0 {
		t.Fatal("no trace in a traced candle")
	}
	j := i + strings.Index(tr[i:], "]") + 1
	withTrace := func(trace string) string { return tr[:i] + `"trace":` + trace + tr[j:] }
	for _, trace := range []string{
		`[{"stage":"ingest","at":"2026-12-02T15:05:00Z"}]`,
		`[{"stage":"ingest","at":"2026-12-02T15:05:00.1Z"}]`,
		`[{"stage":"ingest","at":"2026-12-02T15:05:00.123456789Z"}]`,
		`[{"stage":"ingest","at":"2026-12-02T15:05:00.000000001Z"},{"stage":"replay","at":"2026-12-02T15:05:01.5Z"}]`,
		`[{"stage":"ingest","at":"2026-12-02T15:05:00.10Z"}]`,
		`[{"stage":"ingest","at":"2026-12-02T15:05:00.1234567891Z"}]`,
		`[{"stage":"ingest","at":"2026-12-02T15:05:00.Z"}]`,
		`[{"stage":"ingest","at":"2026-12-02T15:05:00.1x2Z"}]`,
		`[{"stage":"ingest","at":"2026-12-02T16:05:00.1+01:00"}]`,
		`[{"stage":"ingest","at":"2026-12-02T15:05:60.5Z"}]`,
		`[{"at":"2026-12-02T15:05:00Z","stage":"ingest"}]`,
		`[{"stage":"ingest","at":"2026-12-02T15:05:00Z","x":1}]`,
		`[{"stage":"ingest"}]`, `[{"stage":"in\u0067est","at":"2026-12-02T15:05:00Z"}]`,
		`[]`, `null`, `{}`, `[{}]`, `[{"stage":"ingest","at":"2026-12-02T15:05:00Z"},]`,
		`[{"stage":"ingest","at":"2026-12-02T15:05:00Z"}`,
	} {
		in = append(in, withTrace(trace))
	}
	in = append(in, strings.Replace(tr, `{`, `{"trace":[{"stage":"ingest","at":"2026-12-02T15:05:00Z"}],`, 1))
	return in
}

// TestCandleDecoderMatchesDecode: the fast decoder gives what Decode
// gives, the value or an error with the same message, for every input.
func TestCandleDecoderMatchesDecode(t *testing.T) {
	var d CandleDecoder
	fast := 0
	for _, in := range candleInputs(t) {
		checkCandleDecode(t, &d, []byte(in))
		var c Candle
		if d.parse([]byte(in), &c) {
			fast++
		}
	}
	// The inputs of the fast path are the point: an accidental fallback
	// for all of them would pass the comparison.
	if fast < 10 {
		t.Fatalf("%d inputs took the fast path, want at least 10", fast)
	}
}

func checkCandleDecode(t *testing.T, d *CandleDecoder, in []byte) {
	t.Helper()
	want, werr := Decode[Candle](in)
	got, gerr := d.Decode(in)
	if (werr == nil) != (gerr == nil) || (werr != nil && werr.Error() != gerr.Error()) {
		t.Fatalf("%s: error %v, Decode's %v", in, gerr, werr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\ngot  %+v\nwant %+v", in, got, want)
	}
}

func FuzzCandleDecoder(f *testing.F) {
	for _, in := range candleInputs(f) {
		f.Add([]byte(in))
	}
	var d CandleDecoder
	f.Fuzz(func(t *testing.T, in []byte) { checkCandleDecode(t, &d, in) })
}

// TestCandleDecoderAllocs: a candle of the symbol before it decodes with
// no allocation.
func TestCandleDecoderAllocs(t *testing.T) {
	in := []byte(candleInputs(t)[0])
	var d CandleDecoder
	if _, err := d.Decode(in); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = d.Decode(in) }); n != 0 {
		t.Fatalf("%v allocations per candle", n)
	}
}

// BenchmarkDecodeCandle: an imported candle (no trace) and a live one
// (ingest's hop in its trace), each through Decode and CandleDecoder.
func BenchmarkDecodeCandle(b *testing.B) {
	inputs := candleInputs(b)
	for _, in := range []struct{ name, data string }{{"imported", inputs[0]}, {"live", inputs[1]}} {
		data := []byte(in.data)
		b.Run(in.name+"/Decode", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode[Candle](data); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(in.name+"/CandleDecoder", func(b *testing.B) {
			b.ReportAllocs()
			var d CandleDecoder
			for b.Loop() {
				if _, err := d.Decode(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestCandleDecoderTraced: a live candle (ingest's hop in its trace)
// takes the fast path, with one allocation, the trace's, once the symbol
// and stage are known.
func TestCandleDecoderTraced(t *testing.T) {
	c, _, _ := hopEvents()
	in, err := Encode(&c)
	if err != nil {
		t.Fatal(err)
	}
	var d CandleDecoder
	var got Candle
	if !d.parse(in, &got) {
		t.Fatalf("%s: not on the fast path", in)
	}
	checkCandleDecode(t, &d, in)
	if n := testing.AllocsPerRun(100, func() { _, _ = d.Decode(in) }); n != 1 {
		t.Fatalf("%v allocations per candle, want 1", n)
	}
}
