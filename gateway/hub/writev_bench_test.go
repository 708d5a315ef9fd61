//go:build linux

package hub

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// BenchmarkNonBlockingWrite is a flusher's write to each of 256 loopback
// sockets of what a round usually carries (four tick frames), alternating
// within each iteration with the same write through net.Buffers.WriteTo
// (a client writer's path, the reference), so that the two share the
// machine's load. It reports the CPU time per socket write of each and
// their ratio: the floor under a flush round is clients times the first.
//
// A third way, not in the gateway, is measured beside them: the same bytes
// (the frames copied end to end) sent to all 256 sockets by one io_uring
// submission of MSG_DONTWAIT sends, one system call for the batch
// (uring/conn): what a round would cost if it were written that way.
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
	var flat []byte
	for _, f := range frames {
		flat = append(flat, f...)
	}
	fds := make([]int32, 0, conns)
	for _, t := range srv {
		t.rc = rawConn(t.c)
		_ = t.rc.Control(func(fd uintptr) { fds = append(fds, int32(fd)) })
	}
	ring, rerr := newBenchRing(conns)
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
				if ring != nil {
					if err := ring.sendAll(fds, flat); err != nil {
						b.Fatal(err)
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
		b.ReportMetric(per(spent[2])/per(spent[1]), "uring/conn")
	}
	b.ReportMetric(0, "ns/op")
}

// rusageThread is RUSAGE_THREAD, which package syscall does not name.
const rusageThread = 1

type nbTarget struct {
	c  *net.TCPConn
	rc syscall.RawConn
}

// benchRing is the least of an io_uring that BenchmarkNonBlockingWrite
// needs to send one buffer to many sockets in one system call.
type benchRing struct {
	fd                     int
	rings, sqeMem          []byte
	sqTail, sqMask, cqHead *uint32
	cqTail, cqMask         *uint32
	sqArray                []uint32
	sqes                   []benchSQE
	cqes                   []benchCQE
}

// benchSQE and benchCQE are struct io_uring_sqe and io_uring_cqe.
type benchSQE struct {
	opcode, flags uint8
	ioprio        uint16
	fd            int32
	off, addr     uint64
	len, msgFlags uint32
	userData      uint64
	bufIndex      uint16
	personality   uint16
	spliceFdIn    int32
	addr3, pad    uint64
}

type benchCQE struct {
	userData uint64
	res      int32
	flags    uint32
}

const (
	sysIOURingSetup = 425
	sysIOURingEnter = 426
	iouringOpSend   = 26
	iouringOffSQEs  = 0x10000000
	iouringGetEvts  = 1
)

func newBenchRing(entries uint32) (*benchRing, error) {
	// struct io_uring_params: 10 words, then the SQ and CQ ring offsets
	// (10 words each).
	var p struct {
		sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
		resv                                                                   [3]uint32
		sqOff, cqOff                                                           [10]uint32
	}
	fd, _, errno := syscall.Syscall(sysIOURingSetup, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, errno
	}
	r := &benchRing{fd: int(fd)}
	size := max(p.sqOff[6]+p.sqEntries*4, p.cqOff[5]+p.cqEntries*16)
	var err error
	if r.rings, err = syscall.Mmap(r.fd, 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE); err != nil {
		syscall.Close(r.fd)
		return nil, err
	}
	if r.sqeMem, err = syscall.Mmap(r.fd, iouringOffSQEs, int(p.sqEntries)*64, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE); err != nil {
		r.close()
		return nil, err
	}
	word := func(off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&r.rings[off])) }
	r.sqTail, r.sqMask = word(p.sqOff[1]), word(p.sqOff[2])
	r.sqArray = unsafe.Slice(word(p.sqOff[6]), p.sqEntries)
	r.sqes = unsafe.Slice((*benchSQE)(unsafe.Pointer(&r.sqeMem[0])), p.sqEntries)
	r.cqHead, r.cqTail, r.cqMask = word(p.cqOff[0]), word(p.cqOff[1]), word(p.cqOff[2])
	r.cqes = unsafe.Slice((*benchCQE)(unsafe.Pointer(&r.rings[p.cqOff[5]])), p.cqEntries)
	return r, nil
}

// sendAll sends buf to every fd (at most the ring's size) with one
// io_uring_enter, and checks that each took all of it.
func (r *benchRing) sendAll(fds []int32, buf []byte) error {
	tail := atomic.LoadUint32(r.sqTail)
	mask := *r.sqMask
	for i, fd := range fds {
		idx := (tail + uint32(i)) & mask
		r.sqes[idx] = benchSQE{opcode: iouringOpSend, fd: fd, addr: uint64(uintptr(unsafe.Pointer(&buf[0]))), len: uint32(len(buf)), msgFlags: syscall.MSG_DONTWAIT, userData: uint64(i)}
		r.sqArray[idx] = idx
	}
	atomic.StoreUint32(r.sqTail, tail+uint32(len(fds)))
	if _, _, errno := syscall.Syscall6(sysIOURingEnter, uintptr(r.fd), uintptr(len(fds)), uintptr(len(fds)), iouringGetEvts, 0, 0); errno != 0 {
		return errno
	}
	head, end := atomic.LoadUint32(r.cqHead), atomic.LoadUint32(r.cqTail)
	var err error
	for ; head != end; head++ {
		if c := r.cqes[head&*r.cqMask]; c.res != int32(len(buf)) && err == nil {
			err = fmt.Errorf("io_uring send %d: %d of %d bytes", c.userData, c.res, len(buf))
		}
	}
	atomic.StoreUint32(r.cqHead, head)
	runtime.KeepAlive(buf)
	return err
}

func (r *benchRing) close() {
	if r.sqeMem != nil {
		_ = syscall.Munmap(r.sqeMem)
	}
	if r.rings != nil {
		_ = syscall.Munmap(r.rings)
	}
	_ = syscall.Close(r.fd)
}
