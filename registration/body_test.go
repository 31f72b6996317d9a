package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"pesto/shared/redistest"
	"pesto/shared/servicetest"
)

// A client that sends its whole body before reading the answer (as many
// HTTP clients do) reads its 413, not a connection reset, when the body is
// over MAX_BODY_BYTES: the server refuses the body without buffering it,
// then closes gracefully, reading and dropping what the client still sends
// (up to server.LingerBytes within server.LingerTimeout). Without that, the
// kernel resets a connection closed with unread bytes and the client's
// writes fail before it reads anything.
func TestTooLargeWhileSending(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	addr := strings.TrimPrefix(base, "http://")
	const size = 8 << 20 // more than the sockets' buffers hold
	chunk := strings.Repeat("x", 64<<10)
	for _, c := range []struct{ name, head string }{
		{"declared length", "Content-Length: " + strconv.Itoa(size) + "\r\n"},
		{"chunked", "Transfer-Encoding: chunked\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			head := "POST /api/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + c.head + "\r\n"
			if _, err := io.WriteString(conn, head); err != nil {
				t.Fatal(err)
			}
			for sent := 0; sent < size; sent += len(chunk) {
				piece := chunk
				if strings.Contains(c.head, "chunked") {
					piece = fmt.Sprintf("%x\r\n%s\r\n", len(chunk), chunk)
				}
				if _, err := io.WriteString(conn, piece); err != nil {
					t.Fatalf("sending the body, after %d bytes: %v", sent, err)
				}
			}
			res, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			body, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatalf("body: %v", err)
			}
			if res.StatusCode != 413 || string(body) != msgBody("Request body too large") {
				t.Fatalf("got %d %s", res.StatusCode, body)
			}
		})
	}
	noData(t, rs)
}

// 200 unfinished uploads of the largest body allowed keep the real binary
// (built here as make build does: a test binary, with -race, would measure
// the race detector) under its container's 32 MiB, as compose runs it
// (GOMEMLIMIT 24MiB, MAX_BODY_BYTES 16384); declared bodies over the limit
// cost nothing (the old read limit of 1 MiB let 30 of them take the process
// past 32 MiB).
func TestUnfinishedUploadsMemory(t *testing.T) {
	const (
		conns   = 200
		maxBody = 16384
		limit   = 32 << 20
	)
	rs := redistest.Start(t)
	port := strconv.Itoa(redistest.FreePort(t))
	cmd := exec.Command(buildBinary(t))
	cmd.Env = []string{"REDIS_URL=" + rs.URL, "GOMEMLIMIT=24MiB", "MAX_BODY_BYTES=" + strconv.Itoa(maxBody),
		"PORT=" + port, "SHUTDOWN_TIMEOUT=1s"}
	logs := new(servicetest.LogBuffer)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	p := struct{ base string }{"http://127.0.0.1:" + port}
	servicetest.Poll(t, 10*time.Second, "registration serves", func() bool {
		_, err := try("GET", p.base+"/healthz", "")
		return err == nil
	})
	pid := cmd.Process.Pid
	idle := procStatus(t, pid, "VmRSS")

	var open []net.Conn
	defer func() {
		for _, c := range open {
			_ = c.Close()
		}
	}()
	// Declared over the limit: refused before the body is read.
	for range 30 {
		status, got := rawHTTP(t, p.base, "POST /api/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
			"Content-Length: 1048576\r\n\r\n"+strings.Repeat("x", 1000))
		if status != 413 || got != msgBody("Request body too large") {
			t.Fatalf("declared 1 MiB: got %d %s", status, got)
		}
	}
	// Of the maximum size, all but the last byte sent.
	for range conns {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
		req := "POST /api/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
			"Content-Length: " + strconv.Itoa(maxBody) + "\r\n\r\n" + strings.Repeat("x", maxBody-1)
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
	}
	// The server has read everything sent once its 200 sockets have empty
	// receive queues.
	var n int
	var unread int64
	servicetest.Poll(t, 20*time.Second, "the server reads every upload", func() bool {
		n, unread = serverSockets(t, port, open)
		return n == conns && unread == 0
	})
	rss, peak := procStatus(t, pid, "VmRSS"), procStatus(t, pid, "VmHWM")
	t.Logf("RSS idle %.1f MiB, with %d unfinished uploads %.1f MiB (%.2f× idle), peak %.1f MiB",
		mib(idle), conns, mib(rss), float64(rss)/float64(idle), mib(peak))
	if peak >= limit {
		t.Fatalf("peak RSS %.1f MiB, want under %d MiB", mib(peak), limit>>20)
	}
	// The uploads still work once finished.
	for _, c := range open[:3] {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "x"); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 400 || string(b) != msgBody("Invalid JSON body") {
			t.Fatalf("finished upload: got %d %s", res.StatusCode, b)
		}
	}
	noData(t, rs)
}

// buildBinary builds the registration command as make build does (static,
// no race detector) into a temporary directory, and returns its path.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "registration")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// procStatus returns a size field of /proc/<pid>/status, in bytes.
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// serverSockets counts the server's ends (local port port) of the clients'
// connections that are established, and the bytes waiting unread in their
// receive queues.
func serverSockets(t *testing.T, port string, clients []net.Conn) (n int, unread int64) {
	t.Helper()
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(":%04X", p)
	peers := map[string]bool{}
	for _, c := range clients {
		peers[fmt.Sprintf(":%04X", c.LocalAddr().(*net.TCPAddr).Port)] = true
	}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 5 || !strings.HasSuffix(fs[1], want) || len(fs[2]) < 5 || !peers[fs[2][len(fs[2])-5:]] || fs[3] != "01" {
				continue
			}
			_, rx, _ := strings.Cut(fs[4], ":")
			q, err := strconv.ParseInt(rx, 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			n++
			unread += q
		}
	}
	return n, unread
}
