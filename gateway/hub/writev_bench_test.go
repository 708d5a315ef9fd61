//go:build linux

package hub

import (
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// BenchmarkNonBlockingWrite is a flusher's write to each of 256 loopback
// sockets of what a round usually carries (four tick frames), alternating
// within each iteration with the same write through net.Buffers.WriteTo
// (a client writer's path, the reference), so that the two share the
// machine's load. It reports the CPU time per socket write of each and
// their ratio: the floor under a flush round is clients times the first.
//
// A third way is measured beside them: the flushers' sendRing, the same
// frames sent to the sockets in batches of yieldEvery by one io_uring
// submission of MSG_DONTWAIT sendmsgs each, one system call for a batch
// (uring/conn).
func BenchmarkNonBlockingWrite(b *testing.B) {
	const conns = 256
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var srv []*nbTarget
	for range conns {
		peer, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		go func() { _, _ = io.Copy(io.Discard, peer) }()
		c, err := ln.AcceptTCP()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close(); peer.Close() })
		srv = append(srv, &nbTarget{c: c})
	}
	data := []byte(`{"symbol":"BTC/USD","interval":"1m","open_time":"2026-12-06T22:00:00Z","open":97123.4,"high":97150.1,"low":97101.9,"close":97140.2,"volume":12.3456,"trades":321,"final":false}`)
	var frames [][]byte
	for seq := range uint64(4) {
		frames = append(frames, wsFrame(opText, appendEvent(make([]byte, maxHeader), "ticks:BTC-USD", seq, false, data)))
	}
	var nb nbWriter
	var scratch net.Buffers
	var spent [3]time.Duration
	short := 0 // io_uring sends the socket did not take whole
	rcs := make([]syscall.RawConn, 0, conns)
	each := make([][][]byte, 0, conns)
	for _, t := range srv {
		t.rc = rawConn(t.c)
		rcs = append(rcs, t.rc)
		each = append(each, frames)
	}
	ring, rerr := newSendRing(yieldEvery)
	if rerr == nil {
		defer ring.close()
	} else {
		b.Logf("no io_uring here (%v): uring/conn not measured", rerr)
	}
	// CPU time of this thread (user and system, where the loopback's
	// receive path runs too), not wall time: on a loaded machine the wall
	// clock counts the time other processes had the core.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(rusageThread, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b.ResetTimer()
	for range b.N {
		for k := range spent {
			start := cpu()
			if k == 2 {
				for from := 0; ring != nil && from < conns; from += yieldEvery {
					to := min(conns, from+yieldEvery)
					res, err := ring.send(rcs[from:to], each[from:to])
					if err != nil {
						b.Fatal(err)
					}
					for i, r := range res {
						n, err := ringResult(r, frames)
						if err != nil && err != errWouldBlock {
							b.Fatalf("send %d: %d bytes, %v", i, n, err)
						}
						if err != nil {
							short++
						}
					}
				}
				spent[k] += cpu() - start
				continue
			}
			for _, t := range srv {
				var err error
				if k == 0 {
					_, err = nb.writev(t.rc, frames)
				} else {
					// WriteTo consumes (and clears) what it is given.
					scratch = append(scratch[:0], frames...)
					_, err = scratch.WriteTo(t.c)
				}
				if err != nil && err != errWouldBlock {
					b.Fatal(err)
				}
			}
			spent[k] += cpu() - start
		}
	}
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N*conns) }
	b.ReportMetric(per(spent[0]), "nb-cpu-ns/write")
	b.ReportMetric(per(spent[1]), "conn-cpu-ns/write")
	b.ReportMetric(per(spent[0])/per(spent[1]), "nb/conn")
	if ring != nil {
		b.ReportMetric(per(spent[2]), "uring-cpu-ns/write")
		b.ReportMetric(per(spent[2])/per(spent[1]), "uring/conn")
		b.ReportMetric(float64(short), "uring-short-sends")
	}
	b.ReportMetric(0, "ns/op")
}

// rusageThread is RUSAGE_THREAD, which package syscall does not name.
const rusageThread = 1

type nbTarget struct {
	c  *net.TCPConn
	rc syscall.RawConn
}
