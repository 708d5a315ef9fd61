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
