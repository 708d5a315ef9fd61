//go:build linux

package loadtest

import (
	"sync/atomic"
	"syscall"
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

// TestRawLoopWaitsAfterAThinPoll: a poll that found few sockets ready is
// followed by the pause (so that the next poll finds a batch); one that
// found many is not.
func TestRawLoopWaitsAfterAThinPoll(t *testing.T) {
	// Off by default (--poll-gap 0): no pause at all.
	for _, gap := range []time.Duration{0, time.Millisecond} {
		r, err := newRawReaders(1, gap)
		if err != nil {
			t.Fatal(err)
		}
		if (r.loops[0].pause != nil) != (gap > 0) {
			t.Errorf("gap %v: pause set %v", gap, r.loops[0].pause != nil)
		}
		r.close()
	}
	for _, tc := range []struct {
		ready  int
		pauses int
	}{{1, 1}, {rawBusyPoll - 1, 1}, {rawBusyPoll, 0}, {200, 0}} {
		epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		pauses := 0
		l := &rawLoop{epfd: epfd, pause: func() { pauses++ }}
		var peers []int
		frame := []byte(`{"type":"event","channel":"ticks:BTC-USD","seq":7,"snapshot":false,"data":{}}`)
		frame = append([]byte{0x81, byte(len(frame))}, frame...)
		for i := range tc.ready {
			fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK, 0)
			if err != nil {
				t.Fatal(err)
			}
			peers = append(peers, fds[1])
			l.conns = append(l.conns, &rawConn{c: &wsClient{}, fd: fds[0]})
			ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(i)}
			if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, fds[0], &ev); err != nil {
				t.Fatal(err)
			}
			if _, err := syscall.Write(fds[1], frame); err != nil {
				t.Fatal(err)
			}
		}
		var stop atomic.Bool
		if _, ok := l.poll(make([]syscall.EpollEvent, 256), make([]byte, rawReadBuf), &stop); !ok {
			t.Fatal("poll ended the loop")
		}
		for _, rc := range l.conns {
			if len(rc.c.got) != 1 || rc.c.got[0].seq != 7 {
				t.Fatalf("%d ready: a socket read %+v", tc.ready, rc.c.got)
			}
			_ = syscall.Close(rc.fd)
		}
		for _, fd := range peers {
			_ = syscall.Close(fd)
		}
		_ = syscall.Close(epfd)
		if pauses != tc.pauses {
			t.Errorf("%d sockets ready: %d pauses after the poll, want %d", tc.ready, pauses, tc.pauses)
		}
	}
}
