package hub

import (
	"errors"
	"net"
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
// the socket non-blocking, and a function that returns true to
// RawConn.Write is never made to wait. One flusher owns one, so that its
// scratch space and the function handed to RawConn.Write are made once,
// not on every write.
type nbWriter struct {
	iov   []syscall.Iovec
	bufs  [][]byte
	total int
	err   error
	fn    func(fd uintptr) bool
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
	err := rc.Write(w.fn)
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

func (w *nbWriter) write(fd uintptr) bool {
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
	return true
}
