package hub

import (
	"bytes"
	"compress/flate"
	"io"
	"testing"
	"time"

	"cryptostream/streams"
)

// permessage-deflate is not negotiated (issue 15, optional). This measures
// what it would give on the hub's busiest frames, running-candle ticks:
// the bytes of one event frame compressed on its own (no context takeover,
// the only mode in which the hub could still compress each event once for
// every subscriber) against plain, the server's cost of compressing each
// event once, and each client's cost of inflating it, which every
// subscriber pays for every frame.
func tickPayload(tb testing.TB, n int64) []byte {
	tb.Helper()
	now := time.Date(2026, 12, 3, 15, 4, 5, 0, time.UTC)
	tk := &streams.Tick{Candle: streams.Candle{Symbol: "BTC/USD", Interval: streams.Interval1m, Start: now.Truncate(time.Minute),
		Open: 97123.4, High: 97180.1, Low: 97090.2, Close: 97150.7, VWAP: 97140.3, Volume: 12.3456789, Trades: n, Quality: streams.QualityLive}, ReceivedAt: now}
	data, err := streams.Encode(tk)
	if err != nil {
		tb.Fatal(err)
	}
	return appendEvent(nil, "ticks:BTC-USD", uint64(n), false, data)
}

func BenchmarkDeflateTick(b *testing.B) {
	plain := tickPayload(b, 1234)
	var out bytes.Buffer
	fw, err := flate.NewWriter(&out, flate.BestSpeed)
	if err != nil {
		b.Fatal(err)
	}
	deflate := func() []byte {
		out.Reset()
		fw.Reset(&out)
		_, _ = fw.Write(plain)
		_ = fw.Flush()
		// RFC 7692: the sender drops the flush's empty block tail.
		return bytes.TrimSuffix(out.Bytes(), []byte{0, 0, 0xff, 0xff})
	}
	comp := bytes.Clone(deflate())
	b.Run("compress-once", func(b *testing.B) {
		for b.Loop() {
			deflate()
		}
		b.ReportMetric(float64(len(plain)), "plain-bytes")
		b.ReportMetric(float64(len(comp)), "deflated-bytes")
		b.ReportMetric(float64(len(comp))/float64(len(plain)), "ratio")
	})
	b.Run("inflate-per-client", func(b *testing.B) {
		tail := append(bytes.Clone(comp), 0, 0, 0xff, 0xff)
		fr := flate.NewReader(bytes.NewReader(tail))
		buf := make([]byte, 0, 2*len(plain))
		for b.Loop() {
			_ = fr.(flate.Resetter).Reset(bytes.NewReader(tail), nil)
			buf = buf[:0]
			var tmp [512]byte
			for {
				n, err := fr.Read(tmp[:])
				buf = append(buf, tmp[:n]...)
				if err != nil {
					if err != io.EOF && err != io.ErrUnexpectedEOF {
						b.Fatal(err)
					}
					break
				}
				if len(buf) >= len(plain) {
					break
				}
			}
		}
		if !bytes.Equal(buf, plain) {
			b.Fatalf("inflated %q", buf)
		}
	})
}
