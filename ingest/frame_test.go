package ingest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// recordedFrames returns every frame of the recorded Kraken examples, with
// the annotation lines left out, named file:line.
func recordedFrames(t testing.TB) (names []string, frames [][]byte) {
	t.Helper()
	files, err := filepath.Glob("testdata/kraken/*.jsonl")
	if err != nil || len(files) == 0 {
		t.Fatalf("no recorded frames: %v", err)
	}
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for line := 1; sc.Scan(); line++ {
			text := strings.TrimSpace(sc.Text())
			if text == "" || strings.HasPrefix(text, `{"_src"`) || strings.HasPrefix(text, `{"_kind"`) || strings.HasPrefix(text, `{"_note"`) {
				continue
			}
			names = append(names, fmt.Sprintf("%s:%d", filepath.Base(file), line))
			frames = append(frames, []byte(text))
		}
		f.Close()
	}
	return names, frames
}

// describe reduces a parse result to a comparable line.
func describe(f Frame, err error) string {
	if err != nil {
		return "reject " + string(ReasonOf(err))
	}
	switch f.Kind {
	case KindStatus:
		return "status " + f.System
	case KindHeartbeat:
		return "heartbeat"
	case KindPong:
		return fmt.Sprintf("pong %d", f.ReqID)
	case KindSubscribe, KindUnsubscribe:
		op := "subscribe"
		if f.Kind == KindUnsubscribe {
			op = "unsubscribe"
		}
		if !f.Success {
			return fmt.Sprintf("%s failed %s: %s", op, f.Symbol, f.Error)
		}
		return fmt.Sprintf("%s ok %s %d", op, f.Symbol, f.Interval)
	case KindError:
		return "error " + f.Method + ": " + f.Error
	case KindOHLC:
		var b strings.Builder
		if f.Snapshot {
			b.WriteString("snapshot")
		} else {
			b.WriteString("update")
		}
		for _, c := range f.Candles {
			fmt.Fprintf(&b, " %s@%s/%s o=%v c=%v v=%v n=%d", c.Symbol, c.Start.Format("15:04"), c.Interval, c.Open, c.Close, c.Volume, c.Trades)
		}
		if len(f.Rejected) > 0 {
			fmt.Fprintf(&b, " rejected=%d", len(f.Rejected))
		}
		return b.String()
	}
	return "other"
}

// TestParseRecordedFrames runs the parser over every recorded frame. Client
// requests and v1 frames are not server v2 frames and must be rejected,
// never misread.
func TestParseRecordedFrames(t *testing.T) {
	want := map[string]string{
		"v2_control_and_other_channels_docs_examples.jsonl:2":  "status online",
		"v2_control_and_other_channels_docs_examples.jsonl:4":  "heartbeat",
		"v2_control_and_other_channels_docs_examples.jsonl:6":  "reject malformed",
		"v2_control_and_other_channels_docs_examples.jsonl:8":  "pong 101",
		"v2_control_and_other_channels_docs_examples.jsonl:10": "reject malformed",
		"v2_control_and_other_channels_docs_examples.jsonl:11": "other",
		"v2_control_and_other_channels_docs_examples.jsonl:12": "other",
		"v2_control_and_other_channels_docs_examples.jsonl:13": "other",
		"v2_control_and_other_channels_docs_examples.jsonl:14": "reject malformed",
		"v2_control_and_other_channels_docs_examples.jsonl:15": "other",
		"v2_control_and_other_channels_docs_examples.jsonl:17": "reject malformed",
		"v2_control_and_other_channels_docs_examples.jsonl:18": "other",
		"v2_control_and_other_channels_docs_examples.jsonl:19": "other",
		"v2_control_and_other_channels_docs_examples.jsonl:20": "other",
		"v2_control_and_other_channels_docs_examples.jsonl:21": "reject malformed",
		"v2_control_and_other_channels_docs_examples.jsonl:22": "other",
		"v2_ohlc_docs_examples.jsonl:2":                        "reject malformed",
		"v2_ohlc_docs_examples.jsonl:4":                        "subscribe ok ALGO/USD 5",
		"v2_ohlc_docs_examples.jsonl:5":                        "subscribe ok MATIC/USD 5",
		"v2_ohlc_docs_examples.jsonl:7":                        "snapshot ALGO/USD@15:25/5m o=0.09875 c=0.09875 v=201.86015 n=1 ALGO/USD@15:30/5m o=0.09875 c=0.09875 v=16255.46368 n=13",
		"v2_ohlc_docs_examples.jsonl:9":                        "update MATIC/USD@16:25/5m o=0.5624 c=0.5627 v=30927.68066226 n=12",
		"v2_ohlc_docs_examples.jsonl:11":                       "reject malformed",
		"v2_ohlc_docs_examples.jsonl:13":                       "unsubscribe ok ALGO/USD 5",
		"v2_ohlc_docs_examples.jsonl:14":                       "unsubscribe ok MATIC/USD 5",
	}
	names, frames := recordedFrames(t)
	seen := map[string]bool{}
	for i, name := range names {
		t.Run(name, func(t *testing.T) {
			got := describe(ParseFrame(frames[i]))
			seen[name] = true
			w, ok := want[name]
			if strings.HasPrefix(name, "v1_") {
				// v1 frames (positional arrays, "event" objects) are not v2.
				w, ok = "reject malformed", true
			}
			if !ok {
				t.Fatalf("no expectation for %s; parsed as %q", frames[i], got)
			}
			if got != w {
				t.Errorf("%s\n got %q\nwant %q", frames[i], got, w)
			}
		})
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("expected frame %s not found", name)
		}
	}
}

// TestParseFrameCases covers the live frames KRAKEN.md quotes and the bad
// input the ingester must refuse.
func TestParseFrameCases(t *testing.T) {
	candle := func(fields string) string {
		return `{"channel":"ohlc","type":"update","timestamp":"2026-10-06T18:06:02.918011Z","data":[{` + fields + `}]}`
	}
	good := `"symbol":"BTC/USD","open":85750.1,"high":85760,"low":85740,"close":85754.8,"trades":5,"volume":0.5,"vwap":85751,"interval_begin":"2026-10-06T18:06:00.000000000Z","interval":1,"timestamp":"2026-10-06T18:07:00.000000Z"`
	tests := []struct {
		name  string
		frame string
		want  string
	}{
		{"live status with extra fields and uint64 id", `{"channel":"status","type":"update","data":[{"version":"2.0.10","system":"online","api_version":"v2","connection_id":16174536464690282295,"upcoming_maintenance":[],"emergency":[]}]}`, "status online"},
		{"maintenance", `{"channel":"status","data":[{"api_version":"v2","connection_id":1,"system":"maintenance","version":"2.0.0"}],"type":"update"}`, "status maintenance"},
		{"failure ack symbol top level", `{"error":"Currency pair not supported XBT/USD","method":"subscribe","success":false,"symbol":"XBT/USD","time_in":"2026-10-06T17:39:49.588049Z","time_out":"2026-10-06T17:39:49.588083Z"}`, "subscribe failed XBT/USD: Currency pair not supported XBT/USD"},
		{"already subscribed", `{"error":"Already subscribed","method":"subscribe","req_id":2,"success":false,"symbol":"BTC/USD","time_in":"2025-12-20T07:39:28.809188Z","time_out":"2025-12-20T07:39:28.809200Z"}`, "subscribe failed BTC/USD: Already subscribed"},
		{"rate limited without symbol", `{"error":"Exceeded msg rate","method":"subscribe","success":false}`, "subscribe failed : Exceeded msg rate"},
		{"ping error", `{"error":"Unsupported field: 'params' for the given msg type: ping","method":"ping","req_id":0,"success":false,"time_in":"2024-05-19T19:58:40.170724Z","time_out":"2024-05-19T19:58:40.170758Z"}`, "error ping: Unsupported field: 'params' for the given msg type: ping"},
		{"ack with req_id", `{"method":"subscribe","req_id":121,"result":{"channel":"ohlc","interval":60,"snapshot":true,"symbol":"ETH/USD","warnings":["timestamp is deprecated, use interval_begin"]},"success":true,"time_in":"2024-05-19T19:06:57.002983Z","time_out":"2024-05-19T19:06:57.003037Z"}`, "subscribe ok ETH/USD 60"},
		{"good update uses interval_begin not timestamp", candle(good), "update BTC/USD@18:06/1m o=85750.1 c=85754.8 v=0.5 n=5"},
		{"exponent numbers", candle(`"symbol":"X/USD","open":1e-08,"high":2e-08,"low":1e-08,"close":2e-08,"trades":1,"volume":1e3,"vwap":1.5e-08,"interval_begin":"2026-10-06T18:06:00Z","interval":1`), "update X/USD@18:06/1m o=1e-08 c=2e-08 v=1000 n=1"},
		{"negative price", candle(strings.Replace(good, `"low":85740`, `"low":-1`, 1)), "update rejected=1"},
		{"high below low", candle(strings.Replace(good, `"high":85760`, `"high":1`, 1)), "update rejected=1"},
		{"fractional trades", candle(strings.Replace(good, `"trades":5`, `"trades":5.5`, 1)), "update rejected=1"},
		{"negative volume", candle(strings.Replace(good, `"volume":0.5`, `"volume":-0.5`, 1)), "update rejected=1"},
		{"price as string", candle(strings.Replace(good, `"open":85750.1`, `"open":"85750.1"`, 1)), "update rejected=1"},
		{"missing close", candle(strings.Replace(good, `"close":85754.8,`, ``, 1)), "update rejected=1"},
		{"unknown interval", candle(strings.Replace(good, `"interval":1,`, `"interval":2,`, 1)), "update rejected=1"},
		{"off-grid begin", candle(strings.Replace(good, `18:06:00.000000000Z`, `18:06:30.000000000Z`, 1)), "update rejected=1"},
		{"bad symbol", candle(strings.Replace(good, `"BTC/USD"`, `"btc usd"`, 1)), "update rejected=1"},
		{"NaN literal", candle(strings.Replace(good, `"open":85750.1`, `"open":NaN`, 1)), "reject malformed"},
		{"two candles one bad", `{"channel":"ohlc","type":"update","data":[{` + good + `},{"symbol":"ETH/USD"}]}`, "update BTC/USD@18:06/1m o=85750.1 c=85754.8 v=0.5 n=5 rejected=1"},
		{"data not array", `{"channel":"ohlc","type":"update","data":{}}`, "reject malformed"},
		{"unknown type", `{"channel":"ohlc","type":"delta","data":[]}`, "reject malformed"},
		{"truncated", `{"channel":"ohlc","type":"update","data":[{"symbol":"BTC/USD","open":"x",`, "reject malformed"},
		{"two frames", `{"channel":"heartbeat"}{"channel":"heartbeat"}`, "reject malformed"},
		{"empty", ``, "reject malformed"},
		{"null", `null`, "reject malformed"},
		{"status without data", `{"channel":"status","data":[]}`, "reject malformed"},
		{"success ack without symbol", `{"method":"subscribe","success":true,"result":{"channel":"ohlc"}}`, "reject malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := describe(ParseFrame([]byte(tt.frame))); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	f, err := ParseFrame([]byte(candle(good)))
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 10, 6, 18, 6, 2, 918011000, time.UTC); !f.Sent.Equal(want) {
		t.Errorf("sent %s, want %s", f.Sent, want)
	}
}

// FuzzParseFrame feeds the parser anything: it must never panic, and every
// candle it accepts must be valid.
func FuzzParseFrame(f *testing.F) {
	_, frames := recordedFrames(f)
	for _, fr := range frames {
		f.Add(fr)
	}
	f.Add([]byte(`{"channel":"ohlc","type":"update","data":[{"symbol":"BTC/USD","open":1,"high":1,"low":1,"close":1,"trades":1,"volume":1,"interval_begin":"2026-10-06T18:06:00Z","interval":1}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := ParseFrame(b)
		if err != nil {
			return
		}
		for _, c := range fr.Candles {
			if err := c.Validate(); err != nil {
				t.Fatalf("accepted an invalid candle %+v: %v", c, err)
			}
		}
	})
}

// BenchmarkParseFrame parses a one-candle update, the ingester's commonest
// frame.
func BenchmarkParseFrame(b *testing.B) {
	frame := []byte(`{"channel":"ohlc","type":"update","timestamp":"2023-10-04T16:26:30.524394914Z","data":[{"symbol":"MATIC/USD","open":0.5624,"high":0.5628,"low":0.5622,"close":0.5627,"trades":12,"volume":30927.68066226,"vwap":0.5626,"interval_begin":"2023-10-04T16:25:00.000000000Z","interval":5,"timestamp":"2023-10-04T16:30:00.000000Z"}]}`)
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if _, err := ParseFrame(frame); err != nil {
			b.Fatal(err)
		}
	}
}
