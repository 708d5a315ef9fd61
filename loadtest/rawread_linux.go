//go:build linux

package loadtest

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// The healthy clients are read raw: after gorilla's handshake each socket
// leaves Go's poller for one of a few epoll loops that read whatever is
// ready into one buffer and pick each event's sequence out of its frame.
// The generator shares the gateway's cores, and with a goroutine per
// client on gorilla's reader it spent 60% of its CPU in read system calls
// (one that brought data and one that found none, per wake-up) and a tenth
// in scheduling: a CPU it took from the gateway it measures. Each read
// still takes its own arrival time, so every event's delay is measured
// from its publish time to the read that brought it.

// rawReading: the healthy clients are read by the epoll loops.
const rawReading = true

const rawReadBuf = 256 << 10

type rawConn struct {
	c    *wsClient
	fd   int
	left []byte // the start of a frame the last read cut short
}

// rawReaders reads the healthy clients with loops epoll loops until stop.
type rawReaders struct {
	loops []*rawLoop
	wg    sync.WaitGroup
	stop  atomic.Bool
}

type rawLoop struct {
	epfd  int
	conns []*rawConn
	// pause is the wait after a poll that found few sockets ready
	// (time.Sleep of WSConfig.PollGap; nil: none; tests replace it).
	pause func()
}

// With a PollGap, a poll that finds fewer than rawBusyPoll sockets ready is
// followed by a sleep of PollGap before the next, so that the next finds a
// batch. At 10,000 clients the gateway writes each socket about once per
// flush round (50-80 ms), so the loops polled for one or two ready sockets
// at a time: epoll_wait was a quarter of the generator's CPU (5.8 of 24.6 s
// in a profile at 10,000 clients) beside the reads (12.5 s), on the 2 cores
// it shares with the gateway it measures. With 1 ms the generator took
// about 0.75x the CPU per read under other load (BENCHMARKS.md), but it is
// off by default: each sleep ends when the kernel runs the thread again,
// which on a loaded machine is later than the gap, and in 10 pairs at load
// 1-20 the p99 was higher in 6; on a quiet machine it saved nothing, a
// poll there finding enough sockets ready. A frame's delay still
// ends at the read that brings it, so a wait makes delays longer, never
// shorter.
const rawBusyPoll = 64

func newRawReaders(loops int, gap time.Duration) (*rawReaders, error) {
	r := &rawReaders{}
	for range loops {
		fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			r.close()
			return nil, fmt.Errorf("loadtest: epoll: %w", err)
		}
		l := &rawLoop{epfd: fd}
		if gap > 0 {
			l.pause = func() { time.Sleep(gap) }
		}
		r.loops = append(r.loops, l)
	}
	return r, nil
}

// add moves c's socket out of Go's poller into a loop, with what the
// subscription phase read past its last answer.
func (r *rawReaders) add(c *wsClient, left []byte) error {
	tc, ok := c.conn.NetConn().(*net.TCPConn)
	if !ok {
		return errors.New("loadtest: not a TCP connection")
	}
	sc, err := tc.SyscallConn()
	if err != nil {
		return err
	}
	fd := -1
	var derr error
	if err := sc.Control(func(f uintptr) { fd, derr = syscall.Dup(int(f)) }); err != nil {
		return err
	}
	if derr != nil {
		return derr
	}
	// The duplicate keeps the socket (and its O_NONBLOCK) open; closing
	// Go's descriptor takes it off Go's poller.
	_ = c.conn.Close()
	l := r.loops[fd%len(r.loops)]
	rc := &rawConn{c: c, fd: fd, left: left}
	c.rawFD = fd
	idx := len(l.conns)
	l.conns = append(l.conns, rc)
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(idx)}
	if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("loadtest: epoll add: %w", err)
	}
	return nil
}

func (r *rawReaders) start() {
	for _, l := range r.loops {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			l.run(&r.stop)
		}()
	}
}

// stopAndWait ends the loops; what they read stays in each client.
func (r *rawReaders) stopAndWait() {
	r.stop.Store(true)
	r.wg.Wait()
}

func (r *rawReaders) close() {
	for _, l := range r.loops {
		for _, rc := range l.conns {
			if rc.fd >= 0 {
				_ = syscall.Close(rc.fd)
				rc.fd = -1
			}
		}
		_ = syscall.Close(l.epfd)
	}
}

func (l *rawLoop) run(stop *atomic.Bool) {
	events := make([]syscall.EpollEvent, 256)
	buf := make([]byte, rawReadBuf)
	for ok := true; ok && !stop.Load(); {
		buf, ok = l.poll(events, buf, stop)
	}
}

// poll reads the sockets one epoll_wait finds ready, then pauses if they
// were fewer than rawBusyPoll; false when the loop is to end.
func (l *rawLoop) poll(events []syscall.EpollEvent, buf []byte, stop *atomic.Bool) ([]byte, bool) {
	n, err := syscall.EpollWait(l.epfd, events, 100)
	if err != nil {
		return buf, errors.Is(err, syscall.EINTR)
	}
	for _, ev := range events[:n] {
		if stop.Load() {
			return buf, false
		}
		rc := l.conns[ev.Fd]
		if rc.fd < 0 {
			continue
		}
		buf = rc.read(l.epfd, buf)
	}
	if n < rawBusyPoll && l.pause != nil {
		l.pause()
	}
	return buf, true
}

// read takes what the socket holds and notes every event in it.
func (rc *rawConn) read(epfd int, buf []byte) []byte {
	k := copy(buf, rc.left)
	n, err := syscall.Read(rc.fd, buf[k:])
	now := time.Now().UnixNano()
	switch {
	case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR):
		return buf
	case err != nil || n == 0:
		rc.c.close = "eof"
		rc.drop(epfd)
		return buf
	}
	b := buf[:k+n]
	for {
		f, rest, ok := nextFrame(b)
		if !ok {
			break
		}
		b = rest
		switch f.op {
		case websocket.TextMessage:
			if seq, ok := liveSeq(f.payload); ok {
				rc.c.got = append(rc.c.got, recv{seq: seq, at: now})
			}
		case websocket.PingMessage:
			_, _ = syscall.Write(rc.fd, clientFrame(websocket.PongMessage, f.payload))
		case websocket.CloseMessage:
			code := websocket.CloseNoStatusReceived
			if len(f.payload) >= 2 {
				code = int(binary.BigEndian.Uint16(f.payload))
			}
			rc.c.close = strconv.Itoa(code)
			rc.drop(epfd)
			return buf
		}
	}
	rc.left = append(rc.left[:0], b...)
	if len(rc.left) == 0 && cap(rc.left) > 4096 {
		rc.left = nil
	}
	if need := len(rc.left) + 64<<10; need > len(buf) {
		buf = make([]byte, 2*need) // a frame bigger than the buffer
	}
	return buf
}

func (rc *rawConn) drop(epfd int) {
	_ = syscall.EpollCtl(epfd, syscall.EPOLL_CTL_DEL, rc.fd, nil)
	_ = syscall.Close(rc.fd)
	rc.fd = -1
	rc.c.rawFD = -1
}

type wsFrame struct {
	op      int
	payload []byte
}

// nextFrame cuts the first whole server frame (unmasked, unfragmented: the
// hub sends nothing else) off b.
func nextFrame(b []byte) (wsFrame, []byte, bool) {
	if len(b) < 2 {
		return wsFrame{}, b, false
	}
	op := int(b[0] & 0x0F)
	n, h := int(b[1]&0x7F), 2
	switch n {
	case 126:
		if len(b) < 4 {
			return wsFrame{}, b, false
		}
		n, h = int(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return wsFrame{}, b, false
		}
		n, h = int(binary.BigEndian.Uint64(b[2:])), 10
	}
	if len(b) < h+n {
		return wsFrame{}, b, false
	}
	return wsFrame{op: op, payload: b[h : h+n]}, b[h+n:], true
}

var (
	eventPrefix = []byte(`{"type":"event","channel":`)
	seqKeyRaw   = []byte(`,"seq":`)
	liveKey     = []byte(`,"snapshot":false`)
)

// liveSeq is the sequence of a live event frame (not a snapshot, not a
// reply), read at the place the hub writes it.
func liveSeq(p []byte) (uint64, bool) {
	if len(p) < len(eventPrefix)+2 || string(p[:len(eventPrefix)]) != string(eventPrefix) {
		return 0, false
	}
	i := len(eventPrefix)
	// The channel is a quoted name with no escapes.
	if p[i] != '"' {
		return 0, false
	}
	j := i + 1
	for j < len(p) && p[j] != '"' {
		j++
	}
	j++
	if len(p) < j+len(seqKeyRaw) || string(p[j:j+len(seqKeyRaw)]) != string(seqKeyRaw) {
		return 0, false
	}
	j += len(seqKeyRaw)
	var seq uint64
	d := j
	for j < len(p) && p[j] >= '0' && p[j] <= '9' {
		seq = seq*10 + uint64(p[j]-'0')
		j++
	}
	if j == d || len(p) < j+len(liveKey) || string(p[j:j+len(liveKey)]) != string(liveKey) {
		return 0, false
	}
	return seq, true
}

// clientFrame frames a client message. The mask is all zeros: the
// protocol requires a mask on client frames, and a load generator on
// loopback has no proxy cache to poison.
func clientFrame(op int, payload []byte) []byte {
	b := make([]byte, 0, 14+len(payload))
	b = append(b, 0x80|byte(op))
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xFFFF:
		b = binary.BigEndian.AppendUint16(append(b, 0x80|126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 0x80|127), uint64(n))
	}
	b = append(b, 0, 0, 0, 0)
	return append(b, payload...)
}

// subscribeRaw subscribes c to chans over the bare socket (gorilla did the
// handshake only, so its buffer holds nothing), waiting for each answer,
// and returns what it read past the last answer.
func subscribeRaw(ctx context.Context, c *wsClient, chans []string) ([]byte, error) {
	nc := c.conn.NetConn()
	deadline := time.Now().Add(60 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = nc.SetDeadline(deadline)
	defer func() { _ = nc.SetDeadline(time.Time{}) }()
	var b []byte
	buf := make([]byte, 4096)
	for _, ch := range chans {
		req, _ := json.Marshal(map[string]any{"op": "subscribe", "channel": ch})
		if _, err := nc.Write(clientFrame(websocket.TextMessage, req)); err != nil {
			return nil, err
		}
		for done := false; !done; {
			f, rest, ok := nextFrame(b)
			if !ok {
				n, err := nc.Read(buf)
				if err != nil {
					return nil, fmt.Errorf("subscribe %s: %w", ch, err)
				}
				b = append(b, buf[:n]...)
				continue
			}
			b = rest
			if f.op != websocket.TextMessage {
				if f.op == websocket.CloseMessage {
					return nil, fmt.Errorf("subscribe %s: closed", ch)
				}
				continue
			}
			var r struct{ Type, Code, Message string }
			if json.Unmarshal(f.payload, &r) != nil {
				continue
			}
			switch r.Type {
			case "error":
				return nil, fmt.Errorf("subscribe %s: %s: %s", ch, r.Code, r.Message)
			case "subscribed":
				done = true
			}
		}
	}
	return append([]byte(nil), b...), nil
}
