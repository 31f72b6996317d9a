package server

import (
	"io"
	"net"
	"sync"
	"time"
)

// How long, and how many bytes, a closing connection keeps reading what the
// client is still sending (see lingerConn).
const (
	LingerTimeout = 2 * time.Second
	LingerBytes   = 16 << 20
)

// lingerListener hands out connections that close gracefully.
type lingerListener struct{ net.Listener }

func (l lingerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		return &lingerConn{TCPConn: tc}, nil
	}
	return c, nil
}

// lingerConn is a TCP connection whose Close sends what was written, then a
// FIN, and reads (and drops) what the client still sends for up to
// LingerTimeout or LingerBytes before closing for good. A connection closed
// with unread bytes in its receive buffer is reset by the kernel, and a
// reset can make the client lose the answer it has not read yet: a client
// refused in mid-upload (413: its body is over the limit) would see
// "connection reset" instead of the 413. The draining goroutine reads into
// io.Discard's pooled buffer: a closing connection costs no buffer of its own.
type lingerConn struct {
	*net.TCPConn
	once sync.Once
}

func (c *lingerConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		if c.TCPConn.CloseWrite() != nil {
			err = c.TCPConn.Close()
			return
		}
		err = nil
		go func() {
			_ = c.TCPConn.SetReadDeadline(time.Now().Add(LingerTimeout))
			_, _ = io.CopyN(io.Discard, c.TCPConn, LingerBytes)
			_ = c.TCPConn.Close()
		}()
	})
	return err
}
