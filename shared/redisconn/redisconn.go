// Package redisconn connects to Redis in the background, so that a service
// started while Redis is down still comes up, and heals by itself when Redis
// returns. Once connected, rueidis itself reconnects as needed.
package redisconn

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

// ErrNotConnected is returned by Client until the first connection is made.
var ErrNotConnected = errors.New("redis: not connected yet")

// Conn holds a rueidis client once it could be made.
type Conn struct {
	opt    rueidis.ClientOption
	log    *slog.Logger
	client atomic.Pointer[holder]
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

type holder struct{ c rueidis.Client }

// Dial returns at once and connects in the background, retrying with a
// backoff of up to a second until it succeeds or Close is called.
func Dial(opt rueidis.ClientOption, log *slog.Logger) *Conn {
	c := &Conn{opt: opt, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	cl, err := rueidis.NewClient(opt)
	if err == nil {
		c.client.Store(&holder{cl})
		close(c.done)
		return c
	}
	log.Warn("redis unreachable, connecting in the background", "err", err.Error())
	go c.connect()
	return c
}

func (c *Conn) connect() {
	defer close(c.done)
	delay := 50 * time.Millisecond
	for {
		select {
		case <-c.stop:
			return
		case <-time.After(delay):
		}
		cl, err := rueidis.NewClient(c.opt)
		if err == nil {
			c.client.Store(&holder{cl})
			c.log.Info("redis connected")
			return
		}
		c.log.Debug("redis still unreachable", "err", err.Error())
		delay = min(delay*2, time.Second)
	}
}

// Client returns the client, or ErrNotConnected before the first connection.
func (c *Conn) Client() (rueidis.Client, error) {
	if h := c.client.Load(); h != nil {
		return h.c, nil
	}
	return nil, ErrNotConnected
}

// Ping checks that Redis answers within d.
func (c *Conn) Ping(ctx context.Context, d time.Duration) error {
	cl, err := c.Client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return cl.Do(ctx, cl.B().Ping().Build()).Error()
}

// Close stops connecting and closes the client.
func (c *Conn) Close() {
	c.once.Do(func() { close(c.stop) })
	<-c.done
	if h := c.client.Load(); h != nil {
		h.c.Close()
	}
}

// Unavailable reports whether err means Redis could not be reached or did
// not answer in time, so a client may retry soon, as opposed to an error
// reply about the command or the data, or any other fault.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	if re, ok := rueidis.IsRedisErr(err); ok {
		msg := re.Error()
		return re.IsLoading() || re.IsClusterDown() || re.IsTryAgain() ||
			strings.HasPrefix(msg, "MASTERDOWN") || strings.HasPrefix(msg, "READONLY")
	}
	var ne net.Error
	return errors.Is(err, ErrNotConnected) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, rueidis.ErrClosing) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.As(err, &ne)
}
