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

// writevNonblock writes bufs with writev without waiting for room: the
// runtime keeps the socket non-blocking, and a function that returns true
// to RawConn.Write is never made to wait. It returns the bytes written and
// errWouldBlock when the socket could not take them all.
func writevNonblock(rc syscall.RawConn, bufs [][]byte) (int, error) {
	var iov [64]syscall.Iovec
	total, want := 0, 0
	for _, b := range bufs {
		want += len(b)
	}
	var werr error
	err := rc.Write(func(fd uintptr) bool {
		vs := iov[:0]
		for len(bufs) > 0 && werr == nil {
			vs = vs[:0]
			chunk := 0
			for _, b := range bufs[:min(len(bufs), iovMax)] {
				if len(b) == 0 {
					continue
				}
				v := syscall.Iovec{Base: &b[0]}
				v.SetLen(len(b))
				vs = append(vs, v)
				chunk += len(b)
			}
			if len(vs) == 0 {
				break
			}
			n, _, errno := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&vs[0])), uintptr(len(vs)))
			switch {
			case errno == syscall.EINTR:
				continue
			case errno == syscall.EAGAIN:
				werr = errWouldBlock
			case errno != 0:
				werr = errno
			default:
				total += int(n)
				if int(n) < chunk {
					werr = errWouldBlock
				} else {
					bufs = bufs[min(len(bufs), iovMax):]
				}
			}
		}
		return true
	})
	if err != nil {
		return total, err
	}
	if werr == nil && total < want {
		werr = errWouldBlock
	}
	return total, werr
}
