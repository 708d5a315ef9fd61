//go:build linux

package hub

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// flushedClient is a client on a real loopback TCP connection, written by
// its hub's first flusher, whose rounds the test runs by hand (the ticker
// is not started). It returns the client and the peer's end.
func flushedClient(t *testing.T, cfg Config, peerRecvBuf int) (*client, *net.TCPConn) {
	t.Helper()
	cfg.WriteDelay = time.Hour
	return flushedClientOn(t, testClient(t, cfg), peerRecvBuf)
}

// flushedClientOn connects c (not yet started) as flushedClient does.
func flushedClientOn(t *testing.T, c *client, peerRecvBuf int) (*client, *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{}
	if peerRecvBuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, peerRecvBuf)
			})
		}
	}
	peer, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	if peerRecvBuf > 0 {
		_ = srv.SetWriteBuffer(peerRecvBuf)
	}
	c.nc, c.rc, c.fl = srv, rawConn(srv), c.h.flushers[0]
	t.Cleanup(c.fl.closeRing)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writer()
	}()
	t.Cleanup(func() {
		c.kill(1001, "")
		<-writerDone
		c.stopTimers()
		_ = peer.Close()
	})
	return c, peer.(*net.TCPConn)
}

// eventFrame is a live event frame of about size bytes.
func eventFrame(seq uint64, size int) event {
	data := fmt.Sprintf(`{"pad":%q}`, strings.Repeat("x", size))
	return event{seq: seq, frame: wsFrame(opText, appendEvent(make([]byte, maxHeader), "candles:BTC-USD:1m", seq, false, []byte(data)))}
}

// readFrame reads one server frame (unmasked, final) and returns its
// opcode and payload.
func readFrame(r *bufio.Reader) (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	if h[0]&0x70 != 0 || h[0]&0x80 == 0 || h[1]&0x80 != 0 {
		return 0, nil, fmt.Errorf("bad frame header % x", h)
	}
	n := int(h[1])
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint16(l[:]))
	case 127:
		return 0, nil, errors.New("frame too long for this test")
	}
	p := make([]byte, n)
	_, err := io.ReadFull(r, p)
	return h[0] & 0x0F, p, err
}

// wantEvents reads frames until it has seen events from..to in order.
func wantEvents(t *testing.T, r *bufio.Reader, from, to uint64) {
	t.Helper()
	for seq := from; seq <= to; seq++ {
		op, p, err := readFrame(r)
		if err != nil {
			t.Fatalf("event %d: %v", seq, err)
		}
		want := fmt.Sprintf(`"seq":%d,`, seq)
		if op != opText || !strings.Contains(string(p), want) {
			t.Fatalf("frame %d: op %d, %.60s..., want event %d", seq, op, p, seq)
		}
	}
}

// writeWays runs a flusher test with the round's writes batched through
// io_uring and with one writev per client.
func writeWays(t *testing.T, test func(t *testing.T, plain bool)) {
	for _, plain := range []bool{false, true} {
		t.Run(map[bool]string{false: "io_uring", true: "writev"}[plain], func(t *testing.T) { test(t, plain) })
	}
}

// What a client queued between two rounds goes out in one write.
func TestFlusherOneWritePerRound(t *testing.T) { writeWays(t, flusherOneWritePerRound) }

func flusherOneWritePerRound(t *testing.T, plain bool) {
	c, peer := flushedClient(t, Config{RingWrites: !plain}, 0)
	cs := &clientSub{c: c, ready: true}
	now := time.Now()
	for seq := uint64(1); seq <= 5; seq++ {
		if !c.deliver(cs, eventFrame(seq, 100), now) {
			t.Fatalf("event %d not queued", seq)
		}
	}
	c.fl.round(nil)
	r := bufio.NewReader(peer)
	wantEvents(t, r, 1, 5)
	if w, f := testutil.ToFloat64(c.h.m.writes), testutil.ToFloat64(c.h.m.frames); w != 1 || f != 5 {
		t.Fatalf("%v writes carrying %v frames, want 1 carrying 5", w, f)
	}
	// A round with nothing queued writes nothing.
	c.fl.round(nil)
	if w := testutil.ToFloat64(c.h.m.writes); w != 1 {
		t.Fatalf("%v writes after an empty round", w)
	}
}

// A socket too full to take a round's write whole: the rest of the frame
// cut short, then what was queued since, reach the client intact and in
// order (through its own writer), and the client goes back to its flusher
// once it has caught up. A close after such a cut comes after the rest of
// the frame.
func TestFlusherHandsFullSocketToWriter(t *testing.T) { writeWays(t, flusherHandsFullSocketToWriter) }

func flusherHandsFullSocketToWriter(t *testing.T, plain bool) {
	c, peer := flushedClient(t, Config{QueueSize: 10_000, RingWrites: !plain}, 4096)
	cs := &clientSub{c: c, ready: true}
	now := time.Now()
	var seq uint64
	// More than the two socket buffers hold, in rounds, until one cannot
	// be written whole.
	for handed := false; !handed; {
		for range 20 {
			seq++
			if !c.deliver(cs, eventFrame(seq, 1000), now) {
				t.Fatalf("event %d not queued", seq)
			}
		}
		c.fl.round(nil)
		c.qmu.Lock()
		handed = c.handed
		c.qmu.Unlock()
		if seq > 100_000 {
			t.Fatal("the socket never filled")
		}
	}
	// Queued while the writer has it.
	for range 20 {
		seq++
		c.deliver(cs, eventFrame(seq, 1000), now)
	}
	r := bufio.NewReader(peer)
	wantEvents(t, r, 1, seq)
	// Back to the flusher once the writer has written everything.
	for {
		c.qmu.Lock()
		back := !c.handed && len(c.q) == 0
		c.qmu.Unlock()
		if back {
			break
		}
		time.Sleep(time.Millisecond) // polling a state, no deadline but the test's
	}
	seq++
	c.deliver(cs, eventFrame(seq, 10), now)
	c.qmu.Lock()
	listed := c.listed
	c.qmu.Unlock()
	if !listed {
		t.Fatal("a client given back is not in its flusher's next round")
	}
	c.fl.round(nil)
	wantEvents(t, r, seq, seq)

	// Fill it again, then close it as slow: the close frame follows the
	// rest of the frame the flusher cut short.
	for handed := false; !handed; {
		for range 20 {
			seq++
			c.deliver(cs, eventFrame(seq, 1000), now)
		}
		c.fl.round(nil)
		c.qmu.Lock()
		handed = c.handed
		c.qmu.Unlock()
	}
	c.kill(CloseSlowClient, "slow")
	for {
		op, p, err := readFrame(r)
		if err != nil {
			t.Fatalf("no close frame: %v", err)
		}
		if op == opClose {
			if len(p) < 2 || binary.BigEndian.Uint16(p) != CloseSlowClient {
				t.Fatalf("close frame % x", p)
			}
			break
		}
		if op != opText {
			t.Fatalf("frame op %d", op)
		}
	}
}

// A round lets other goroutines run every yieldEvery clients: with a
// flusher on every P, the readers and fan-outs that feed the clients would
// otherwise wait for the scheduler to preempt it. On one P, a goroutine
// started before the round runs once the round has taken yieldEvery
// clients, not after the whole round.
func TestFlusherRoundYields(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	h := testClient(t, Config{WriteDelay: time.Hour}).h
	f := h.flushers[0]
	// The ring's setup is system calls, which can hand the one P to the
	// goroutine below before the round starts.
	f.openRing()
	t.Cleanup(f.closeRing)
	clients := make([]*client, 4*yieldEvery)
	for i := range clients {
		// Nothing queued: the round only takes each off its list.
		clients[i] = &client{h: h, listed: true}
	}
	f.dirty = append(f.dirty, clients...)
	seen := make(chan int, 1)
	go func() {
		n := 0
		for _, c := range clients {
			c.qmu.Lock()
			if !c.listed {
				n++
			}
			c.qmu.Unlock()
		}
		seen <- n
	}()
	f.round(nil)
	if n := <-seen; n != yieldEvery {
		t.Fatalf("another goroutine first ran after the round had taken %d of %d clients, want %d", n, len(clients), yieldEvery)
	}
}

// A round over many clients enters the kernel once per batch of them where
// io_uring is allowed, and once per client otherwise; every client gets
// all it queued, in order.
func TestFlusherBatchesWrites(t *testing.T) {
	const n = 3 * yieldEvery / 2
	for _, tc := range []struct {
		name      string
		plain     bool
		wantCalls float64
	}{{"io_uring", false, 2}, {"writev", true, n}} {
		t.Run(tc.name, func(t *testing.T) {
			first, firstPeer := flushedClient(t, Config{RingWrites: !tc.plain}, 0)
			h := first.h
			clients, peers := []*client{first}, []*net.TCPConn{firstPeer}
			for i := range n - 1 {
				// All on the first client's hub and flusher.
				c := &client{h: h, id: uint64(i + 2), wake: make(chan struct{}, 1), done: make(chan struct{}), subs: map[string]*clientSub{}}
				c.room = sync.NewCond(&c.qmu)
				c, peer := flushedClientOn(t, c, 0)
				clients, peers = append(clients, c), append(peers, peer)
			}
			now := time.Now()
			for _, c := range clients {
				cs := &clientSub{c: c, ready: true}
				for seq := uint64(1); seq <= 3; seq++ {
					if !c.deliver(cs, eventFrame(seq, 100), now) {
						t.Fatalf("event %d not queued", seq)
					}
				}
			}
			first.fl.round(nil)
			for i, peer := range peers {
				t.Run(fmt.Sprint(i), func(t *testing.T) { wantEvents(t, bufio.NewReader(peer), 1, 3) })
			}
			if calls := testutil.ToFloat64(h.m.syscalls); calls != tc.wantCalls {
				t.Fatalf("%v system calls for %d clients, want %v", calls, n, tc.wantCalls)
			}
			if w, f := testutil.ToFloat64(h.m.writes), testutil.ToFloat64(h.m.frames); w != n || f != 3*n {
				t.Fatalf("%v writes carrying %v frames, want %d carrying %d", w, f, n, 3*n)
			}
		})
	}
}

// tcpPair is a loopback connection: the server's end and the peer's.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close(); _ = peer.Close() })
	return srv, peer
}

// A flusher that is idle writes a frame as soon as it is queued, not at the
// next tick of a WriteDelay clock; frames queued within WriteDelay of the
// last round's start wait for it and go out together. The clock is
// synctest's: time passes only when every goroutine waits.
func TestFlusherWritesAtOnceWhenIdle(t *testing.T) {
	srv, peer := tcpPair(t)
	synctest.Test(t, func(t *testing.T) {
		c := testClient(t, Config{WriteDelay: time.Hour})
		c.nc, c.rc, c.fl = srv, rawConn(srv), c.h.flushers[0]
		stop, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			c.fl.run(stop)
		}()
		cs := &clientSub{c: c, ready: true}
		start := time.Now()
		c.deliver(cs, eventFrame(1, 100), time.Now())
		synctest.Wait()
		if w := testutil.ToFloat64(c.h.m.writes); w != 1 || time.Since(start) != 0 {
			t.Fatalf("%v writes after %v idle, want 1 at once", w, time.Since(start))
		}
		time.Sleep(time.Minute)
		for seq := uint64(2); seq <= 3; seq++ {
			c.deliver(cs, eventFrame(seq, 100), time.Now())
		}
		synctest.Wait()
		if w := testutil.ToFloat64(c.h.m.writes); w != 1 {
			t.Fatalf("%v writes a minute after the first round, want 1 (the rest wait for WriteDelay)", w)
		}
		time.Sleep(time.Hour - time.Minute)
		synctest.Wait()
		if w, f := testutil.ToFloat64(c.h.m.writes), testutil.ToFloat64(c.h.m.frames); w != 2 || f != 3 {
			t.Fatalf("%v writes carrying %v frames, want 2 carrying 3", w, f)
		}
		close(stop)
		<-done
	})
	wantEvents(t, bufio.NewReader(peer), 1, 3)
}

// A fan-out's walk wakes the flushers when it ends, not at its first
// subscriber: one event's frames go out in one round.
func TestFanoutWakesFlushersOnceWalked(t *testing.T) {
	h := testClient(t, Config{WriteDelay: time.Hour}).h
	f := h.flushers[0]
	h.fanoutStart()
	for i := range 3 {
		c := &client{h: h, id: uint64(i + 1), fl: f}
		c.qmu.Lock()
		c.pushLocked(qitem{b: []byte{1}}, time.Now())
		c.qmu.Unlock()
	}
	if len(f.kick) != 0 {
		t.Fatal("a client listed during a fan-out woke its flusher")
	}
	h.fanoutDone()
	if len(f.kick) != 1 {
		t.Fatal("the fan-out's end did not wake the flusher")
	}
	for _, other := range h.flushers[1:] {
		if len(other.kick) != 0 {
			t.Fatal("a flusher with nothing listed was woken")
		}
	}
}
