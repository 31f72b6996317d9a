package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// start runs the program on a free port until the test ends and returns
// its port.
func start(t *testing.T) int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, nil, env(map[string]string{"PORT": "0"}), io.Discard, func(a net.Addr) { addr <- a })
	}()
	var port int
	select {
	case a := <-addr:
		port = a.(*net.TCPAddr).Port
	case err := <-done:
		t.Fatalf("run: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run after cancel: %v, want nil (a clean shutdown)", err)
		}
	})
	return port
}

func TestServeAndHealthcheck(t *testing.T) {
	port := start(t)
	res, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/api/ping")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(body) != `{"message":"OK"}` {
		t.Errorf("GET /api/ping: %d %q", res.StatusCode, body)
	}
	if err := run(context.Background(), []string{"healthcheck"}, env(map[string]string{"PORT": strconv.Itoa(port)}), io.Discard, nil); err != nil {
		t.Errorf("healthcheck of a running server: %v", err)
	}
}

func TestHealthcheckFails(t *testing.T) {
	// A port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	start := time.Now()
	err = run(context.Background(), []string{"healthcheck"}, env(map[string]string{"PORT": port}), io.Discard, nil)
	if !errors.Is(err, errUnhealthy) || exitCode(err) != 1 {
		t.Errorf("healthcheck with no server: %v (exit %d), want unhealthy, exit 1", err, exitCode(err))
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("healthcheck took %v, want at most 2 s and a little", d)
	}
}

func TestCommandLine(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, env(nil), &out, nil); err != nil || out.String() != "demo-api dev\n" {
		t.Errorf("version: %q %v, want \"demo-api dev\\n\"", out.String(), err)
	}
	for _, tc := range []struct {
		args []string
		port string
	}{
		{[]string{"frobnicate"}, ""},
		{[]string{"healthcheck", "now"}, ""},
		{nil, "http"},
		{nil, "70000"},
	} {
		err := run(context.Background(), tc.args, env(map[string]string{"PORT": tc.port}), io.Discard, nil)
		if err == nil || exitCode(err) != 2 {
			t.Errorf("args %q PORT=%q: %v (exit %d), want an error, exit 2", tc.args, tc.port, err, exitCode(err))
		}
	}
}
