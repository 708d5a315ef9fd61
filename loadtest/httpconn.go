package loadtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"
)

// restTarget is one GET as raw HTTP/1.1 bytes. The load generator shares
// two cores with the server it measures, so it writes the same request
// bytes on a kept-alive connection and reads just the status line and
// Content-Length of the answer: net/http's client spends several times
// that per request, CPU taken from the server under test.
type restTarget struct {
	addr string
	req  []byte
}

func newRESTTarget(base, path, token string) (*restTarget, error) {
	u, err := url.Parse(base + path)
	if err != nil {
		return nil, fmt.Errorf("loadtest: %q: %w", base+path, err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("loadtest: %q: only http is measured", base)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\n", u.RequestURI(), u.Host)
	if token != "" {
		fmt.Fprintf(&b, "Authorization: Bearer %s\r\n", token)
	}
	b.WriteString("\r\n")
	return &restTarget{addr: addr, req: b.Bytes()}, nil
}

func (t *restTarget) client() *restConn { return &restConn{target: t} }

// restConn is one keep-alive client; it dials again after an error or a
// Connection: close.
type restConn struct {
	target *restTarget
	conn   net.Conn
	r      *bufio.Reader
}

var errChunked = errors.New("loadtest: chunked answers are not read; the measured routes send Content-Length")

// get sends the request and reads the answer; it returns the status, or 0
// for a transport error or an answer it cannot read.
func (c *restConn) get() int {
	code, keep, err := c.roundTrip()
	if err != nil || !keep {
		c.close()
	}
	if err != nil {
		return 0
	}
	return code
}

func (c *restConn) roundTrip() (code int, keep bool, err error) {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.target.addr, 10*time.Second)
		if err != nil {
			return 0, false, err
		}
		c.conn, c.r = conn, bufio.NewReaderSize(conn, 16<<10)
	}
	if err := c.conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return 0, false, err
	}
	if _, err := c.conn.Write(c.target.req); err != nil {
		return 0, false, err
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, false, fmt.Errorf("loadtest: status line %q", line)
	}
	if code, err = strconv.Atoi(string(line[9:12])); err != nil {
		return 0, false, fmt.Errorf("loadtest: status line %q", line)
	}
	length, keep := -1, true
	for {
		h, err := c.r.ReadSlice('\n')
		if err != nil {
			return 0, false, err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return 0, false, fmt.Errorf("loadtest: header line %q", h)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil || length < 0 {
				return 0, false, fmt.Errorf("loadtest: Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return 0, false, errChunked
		case bytes.EqualFold(name, []byte("Connection")) && bytes.EqualFold(value, []byte("close")):
			keep = false
		}
	}
	if length < 0 {
		return 0, false, errors.New("loadtest: an answer without Content-Length")
	}
	if _, err := c.r.Discard(length); err != nil {
		return 0, false, err
	}
	return code, keep, nil
}

func (c *restConn) close() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn, c.r = nil, nil
	}
}
