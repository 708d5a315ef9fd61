//go:build linux

package loadtest

import (
	"testing"
	"time"
)

func TestLiveSeq(t *testing.T) {
	for _, tc := range []struct {
		in   string
		seq  uint64
		live bool
	}{
		{`{"type":"event","channel":"ticks:BTC-USD","seq":1234,"snapshot":false,"data":{}}`, 1234, true},
		{`{"type":"event","channel":"ticks:BTC-USD","seq":1234,"snapshot":true,"data":{}}`, 0, false},
		{`{"type":"subscribed","channel":"ticks:BTC-USD","seq":7}`, 0, false},
		{`{"type":"event","channel":"ticks:BTC-USD","seq":,"snapshot":false}`, 0, false},
		{`{"type":"event","channel":"ticks:BTC-USD`, 0, false},
	} {
		seq, live := liveSeq([]byte(tc.in))
		if seq != tc.seq || live != tc.live {
			t.Errorf("liveSeq(%s) = %d, %v; want %d, %v", tc.in, seq, live, tc.seq, tc.live)
		}
	}
}

func TestNextFrame(t *testing.T) {
	long := make([]byte, 300)
	var b []byte
	b = append(b, 0x81, 3, 'a', 'b', 'c')
	b = append(b, 0x81, 126, 1, 44)
	b = append(b, long...)
	b = append(b, 0x88, 2, 0x0F, 0xA8) // close 4008
	f, rest, ok := nextFrame(b)
	if !ok || f.op != 1 || string(f.payload) != "abc" {
		t.Fatalf("first %+v %v", f, ok)
	}
	// A frame cut short waits for more bytes.
	if _, r, ok := nextFrame(rest[:100]); ok || len(r) != 100 {
		t.Fatalf("cut frame taken")
	}
	f, rest, ok = nextFrame(rest)
	if !ok || len(f.payload) != 300 {
		t.Fatalf("second %d %v", len(f.payload), ok)
	}
	f, rest, ok = nextFrame(rest)
	if !ok || f.op != 8 || len(rest) != 0 {
		t.Fatalf("close %+v %v", f, ok)
	}
}

func TestStageDelays(t *testing.T) {
	key := func(le string) string { return stageBucket + `stage="queue",le="` + le + `"}` }
	m0 := map[string]float64{key("0.01"): 10, key("0.1"): 10, key("+Inf"): 10}
	// 100 more in the window: 50 under 10 ms, 49 between 10 and 100 ms,
	// one above.
	m1 := map[string]float64{key("0.01"): 60, key("0.1"): 109, key("+Inf"): 110}
	st := stageDelays(m0, m1)
	if len(st) != 1 || st[0].Stage != "queue" || st[0].Count != 100 {
		t.Fatalf("%+v", st)
	}
	if st[0].P50 != 10*time.Millisecond || st[0].P99 != 100*time.Millisecond {
		t.Fatalf("%+v", st[0])
	}
}
