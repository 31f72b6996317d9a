// Package redistest starts a real redis-server on a free loopback port for a
// test and stops it when the test ends. A missing redis-server fails the
// test; it is never skipped.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// Server is a redis-server process owned by one test.
type Server struct {
	t    testing.TB
	Port int
	Addr string // 127.0.0.1:port
	URL  string // redis://127.0.0.1:port
	args []string
	cmd  *exec.Cmd
	cli  rueidis.Client // for Do, made on first use
}

// Start starts a redis-server with no persistence on a free port and
// registers its stop with t.Cleanup. Extra args are passed to redis-server.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server is not installed (apt-get install redis-server): %v", err)
	}
	port := FreePort(t)
	s := &Server{
		t:    t,
		Port: port,
		Addr: "127.0.0.1:" + strconv.Itoa(port),
		URL:  "redis://127.0.0.1:" + strconv.Itoa(port),
		args: args,
	}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (s *Server) start() {
	s.t.Helper()
	args := append([]string{
		"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no",
		"--logfile", "", "--loglevel", "warning",
	}, s.args...)
	s.cmd = exec.Command("redis-server", args...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if ping(s.Addr) == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.t.Fatalf("redis-server on %s did not answer PING within 10s", s.Addr)
}

// Stop kills the server and waits for it to exit. Stopping twice is fine.
func (s *Server) Stop() {
	if s.cli != nil {
		s.cli.Close()
		s.cli = nil
	}
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart starts the server again on the same port (after Stop), with
// empty data.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// Client returns a plain client to the server, closed when the test ends.
func (s *Server) Client() rueidis.Client {
	s.t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{s.Addr}, DisableCache: true})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(c.Close)
	return c
}

// Do runs one command and returns its reply as a string ("" for nil), failing
// the test on any other error.
func (s *Server) Do(args ...string) string {
	s.t.Helper()
	if s.cli == nil {
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{s.Addr}, DisableCache: true})
		if err != nil {
			s.t.Fatal(err)
		}
		s.cli = c
	}
	c := s.cli
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res := c.Do(ctx, c.B().Arbitrary(args...).Build())
	if rueidis.IsRedisNil(res.Error()) {
		return ""
	}
	if err := res.Error(); err != nil {
		s.t.Fatalf("%v: %v", args, err)
	}
	msg, _ := res.ToMessage()
	if v, err := msg.AsInt64(); err == nil && !msg.IsString() {
		return strconv.FormatInt(v, 10)
	}
	if v, err := msg.ToString(); err == nil {
		return v
	}
	return fmt.Sprint(msg)
}

// ping sends PING over a raw connection and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("ping: %q", line)
	}
	return nil
}
