//go:build !linux

package hub

import (
	"errors"
	"net"
	"syscall"
)

var errWouldBlock = errors.New("hub: socket full")

// rawConn: elsewhere than Linux every client's own writer writes it.
func rawConn(net.Conn) syscall.RawConn { return nil }

type nbWriter struct{}

func (*nbWriter) writev(syscall.RawConn, [][]byte) (int, error) {
	return 0, errors.New("hub: no non-blocking writev here")
}

// sendRing: io_uring is Linux's; the flushers never run here (rawConn).
type sendRing struct{}

func newSendRing(int) (*sendRing, error) { return nil, errors.New("hub: no io_uring here") }

func (*sendRing) send([]syscall.RawConn, [][][]byte) ([]int32, error) {
	return nil, errors.New("hub: no io_uring here")
}

func (*sendRing) close() {}
