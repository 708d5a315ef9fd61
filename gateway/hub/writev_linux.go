package hub

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// errWouldBlock: the socket took part of a write or none of it.
var errWouldBlock = errors.New("hub: socket full")

// rawConn is what a flusher writes through: a plain TCP connection's file
// descriptor, or nil when the connection is anything else (TLS) and its
// own writer writes it.
func rawConn(nc net.Conn) syscall.RawConn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// iovMax is the most buffers one writev takes (IOV_MAX).
const iovMax = 1024

// nbWriter writes with writev without waiting for room: the runtime keeps
// the socket non-blocking. It writes inside RawConn.Control, which holds
// the descriptor against a close, rather than RawConn.Write, which also
// takes the descriptor's write lock and readies the poller for a wait
// that never comes: at ten thousand sockets those two touch a cold line
// each per write and were a twelfth of a round's CPU outside the system
// call (profile, BENCHMARKS.md). Nothing else writes the socket meanwhile:
// its own writer writes only while a flusher has handed the client over,
// and closes it only once the flusher's write has ended (fwriting). One
// flusher owns one nbWriter, so that its scratch space and the function
// handed to Control are made once, not on every write.
type nbWriter struct {
	iov   []syscall.Iovec
	bufs  [][]byte
	total int
	err   error
	fn    func(fd uintptr)
}

// writev writes bufs and returns the bytes written, with errWouldBlock
// when the socket could not take them all.
func (w *nbWriter) writev(rc syscall.RawConn, bufs [][]byte) (int, error) {
	if w.fn == nil {
		w.fn = w.write
	}
	want := 0
	for _, b := range bufs {
		want += len(b)
	}
	w.bufs, w.total, w.err = bufs, 0, nil
	err := rc.Control(w.fn)
	total, werr := w.total, w.err
	w.bufs, w.err = nil, nil
	clear(w.iov[:cap(w.iov)])
	if err != nil {
		return total, err
	}
	if werr == nil && total < want {
		werr = errWouldBlock
	}
	return total, werr
}

func (w *nbWriter) write(fd uintptr) {
	for len(w.bufs) > 0 && w.err == nil {
		vs := w.iov[:0]
		chunk := 0
		for _, b := range w.bufs[:min(len(w.bufs), iovMax)] {
			if len(b) == 0 {
				continue
			}
			v := syscall.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			vs = append(vs, v)
			chunk += len(b)
		}
		w.iov = vs
		if len(vs) == 0 {
			break
		}
		n, _, errno := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&vs[0])), uintptr(len(vs)))
		switch {
		case errno == syscall.EINTR:
		case errno == syscall.EAGAIN:
			w.err = errWouldBlock
		case errno != 0:
			w.err = errno
		default:
			w.total += int(n)
			if int(n) < chunk {
				w.err = errWouldBlock
			} else {
				w.bufs = w.bufs[min(len(w.bufs), iovMax):]
			}
		}
	}
}

// sendRing sends a batch of clients' frames with one io_uring_enter: one
// MSG_DONTWAIT sendmsg per client, the same bytes and the same partial
// writes as writev, but one kernel entry and exit for the batch instead of
// one per client. On this VM every kernel exit pays for retpolines, SRSO
// and TSA buffer clears, and a round is nine tenths system calls; a batch
// cost 0.57-0.73 of the CPU per write of writev (BENCHMARKS.md, "The flush
// round is the kernel's").
//
// The file descriptors stay valid for the call: each is taken inside its
// conn's RawConn.Control (which holds the fd against a close), and the
// submission runs innermost, before any of them returns.
type sendRing struct {
	fd                             int
	rings, sqeMem                  []byte
	sqHead, sqTail, sqMask, cqHead *uint32
	cqTail, cqMask                 *uint32
	sqArray                        []uint32
	sqes                           []ringSQE
	cqes                           []ringCQE

	// One batch: its conns, fds, messages and results; the iovecs point
	// into the callers' frames.
	rcs  []syscall.RawConn
	bufs [][][]byte
	fds  []int32
	msgs []syscall.Msghdr
	iovs [][]syscall.Iovec
	res  []int32
	err  error
	fn   func(fd uintptr)
}

// ringSQE and ringCQE are struct io_uring_sqe and io_uring_cqe.
type ringSQE struct {
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

type ringCQE struct {
	userData uint64
	res      int32
	flags    uint32
}

const (
	sysIOURingSetup   = 425
	sysIOURingEnter   = 426
	iouringOpSendmsg  = 9
	iouringOffSQEs    = 0x10000000
	iouringEnterGetEv = 1
)

// newSendRing sets up a ring for batches of up to entries clients; it
// fails where io_uring is not allowed (seccomp, kernel.io_uring_disabled,
// an old kernel), and the flusher then writes each client with writev.
func newSendRing(entries int) (*sendRing, error) {
	// struct io_uring_params: 10 words, then the SQ and CQ ring offsets
	// (10 words each).
	var p struct {
		sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
		resv                                                                   [3]uint32
		sqOff, cqOff                                                           [10]uint32
	}
	fd, _, errno := syscall.Syscall(sysIOURingSetup, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("hub: io_uring_setup: %w", errno)
	}
	r := &sendRing{fd: int(fd)}
	size := max(p.sqOff[6]+p.sqEntries*4, p.cqOff[5]+p.cqEntries*16)
	var err error
	if r.rings, err = syscall.Mmap(r.fd, 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE); err != nil {
		_ = syscall.Close(r.fd)
		return nil, fmt.Errorf("hub: io_uring rings: %w", err)
	}
	if r.sqeMem, err = syscall.Mmap(r.fd, iouringOffSQEs, int(p.sqEntries)*int(unsafe.Sizeof(ringSQE{})), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE); err != nil {
		r.close()
		return nil, fmt.Errorf("hub: io_uring entries: %w", err)
	}
	word := func(off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&r.rings[off])) }
	r.sqHead, r.sqTail, r.sqMask = word(p.sqOff[0]), word(p.sqOff[1]), word(p.sqOff[2])
	r.sqArray = unsafe.Slice(word(p.sqOff[6]), p.sqEntries)
	r.sqes = unsafe.Slice((*ringSQE)(unsafe.Pointer(&r.sqeMem[0])), p.sqEntries)
	r.cqHead, r.cqTail, r.cqMask = word(p.cqOff[0]), word(p.cqOff[1]), word(p.cqOff[2])
	r.cqes = unsafe.Slice((*ringCQE)(unsafe.Pointer(&r.rings[p.cqOff[5]])), p.cqEntries)
	r.fds = make([]int32, 0, p.sqEntries)
	r.msgs = make([]syscall.Msghdr, p.sqEntries)
	r.iovs = make([][]syscall.Iovec, p.sqEntries)
	r.res = make([]int32, p.sqEntries)
	r.fn = r.held
	return r, nil
}

// size is the most clients one send takes.
func (r *sendRing) size() int { return len(r.sqes) }

// send writes bufs[i] to rcs[i] for every i (at most size of them, none
// with more than iovMax buffers) and returns the bytes each socket took:
// a short count or 0 where it was full. An error means the ring itself
// failed and nothing was sent.
func (r *sendRing) send(rcs []syscall.RawConn, bufs [][][]byte) ([]int32, error) {
	r.rcs, r.bufs, r.fds, r.err = rcs, bufs, r.fds[:0], nil
	if err := rcs[0].Control(r.fn); err != nil && r.err == nil {
		r.err = err
	}
	res, err := r.res[:len(rcs)], r.err
	for i := range rcs {
		clear(r.iovs[i])
		r.msgs[i] = syscall.Msghdr{}
	}
	r.rcs, r.bufs, r.err = nil, nil, nil
	return res, err
}

// held runs inside the Control of the next conn: it records its fd and
// takes the one after, or submits once it holds them all.
func (r *sendRing) held(fd uintptr) {
	r.fds = append(r.fds, int32(fd))
	if i := len(r.fds); i < len(r.rcs) {
		if err := r.rcs[i].Control(r.fn); err != nil && r.err == nil {
			r.err = err
		}
		return
	}
	r.err = r.submit()
}

func (r *sendRing) submit() error {
	n := uint32(len(r.fds))
	tail := atomic.LoadUint32(r.sqTail)
	mask := *r.sqMask
	for i, fd := range r.fds {
		iov := r.iovs[i][:0]
		for _, b := range r.bufs[i] {
			if len(b) == 0 {
				continue
			}
			v := syscall.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			iov = append(iov, v)
		}
		r.iovs[i] = iov
		m := &r.msgs[i]
		if len(iov) > 0 {
			m.Iov = &iov[0]
			m.Iovlen = uint64(len(iov))
		}
		idx := (tail + uint32(i)) & mask
		r.sqes[idx] = ringSQE{opcode: iouringOpSendmsg, fd: fd, addr: uint64(uintptr(unsafe.Pointer(m))), len: 1, msgFlags: syscall.MSG_DONTWAIT | syscall.MSG_NOSIGNAL, userData: uint64(i)}
		r.sqArray[idx] = idx
	}
	atomic.StoreUint32(r.sqTail, tail+n)
	// MSG_DONTWAIT completes each send at once, with what the socket took
	// or -EAGAIN, so the call returns with every completion.
	var done uint32
	for done < n {
		toSubmit := atomic.LoadUint32(r.sqTail) - atomic.LoadUint32(r.sqHead)
		_, _, errno := syscall.Syscall6(sysIOURingEnter, uintptr(r.fd), uintptr(toSubmit), uintptr(n-done), iouringEnterGetEv, 0, 0)
		if errno != 0 && errno != syscall.EINTR {
			if done == 0 && atomic.LoadUint32(r.sqHead) == tail {
				// Nothing went out: take the entries back.
				atomic.StoreUint32(r.sqTail, tail)
			}
			return fmt.Errorf("hub: io_uring_enter: %w", errno)
		}
		head, end := atomic.LoadUint32(r.cqHead), atomic.LoadUint32(r.cqTail)
		for ; head != end; head++ {
			c := r.cqes[head&*r.cqMask]
			r.res[c.userData] = c.res
			done++
		}
		atomic.StoreUint32(r.cqHead, head)
	}
	runtime.KeepAlive(r.bufs)
	return nil
}

func (r *sendRing) close() {
	if r.sqeMem != nil {
		_ = syscall.Munmap(r.sqeMem)
	}
	if r.rings != nil {
		_ = syscall.Munmap(r.rings)
	}
	_ = syscall.Close(r.fd)
}
