// Command demo-api stands in for Pesto's code-execution API in the demo
// stack (compose.yaml's api service): it answers GET /api/ping,
// GET /api/list-runtimes and POST /api/execute in that API's JSON shapes,
// so that Pesto's SDKs work through the gateway out of the box. It runs no
// code: its one runtime, "Demo", answers the code as the program's output.
//
//	demo-api              serve on :$PORT (default 80)
//	demo-api healthcheck  exit 0 when GET /api/ping on 127.0.0.1:$PORT answers 200 within 2 s
//	demo-api version      print the version
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, nil)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo-api:", err)
		os.Exit(exitCode(err))
	}
}

// errUnhealthy is the healthcheck's failure (exit 1); a bad command line
// or PORT exits 2.
var (
	errUnhealthy = errors.New("unhealthy")
	errUsage     = errors.New("usage: demo-api [healthcheck|version]")
)

func exitCode(err error) int {
	if errors.Is(err, errUnhealthy) {
		return 1
	}
	return 2
}

// run is the whole program. ready, when not nil, is called with the
// listening address (tests use PORT=0).
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer, ready func(net.Addr)) error {
	port := 80
	if v := getenv("PORT"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p < 0 || p > 65535 {
			return fmt.Errorf("PORT %q: not a port number", v)
		}
		port = p
	}
	switch {
	case len(args) == 1 && args[0] == "version":
		fmt.Fprintln(stdout, "demo-api", version)
		return nil
	case len(args) == 1 && args[0] == "healthcheck":
		return healthcheck(port)
	case len(args) > 0:
		return errUsage
	}

	l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           newHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	if ready != nil {
		ready(l.Addr())
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}

// healthcheck asks GET /api/ping of the server on this container's port:
// the image has no shell, so the HEALTHCHECK runs the binary itself.
func healthcheck(port int) error {
	c := &http.Client{Timeout: 2 * time.Second}
	res, err := c.Get("http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) + "/api/ping")
	if err != nil {
		return fmt.Errorf("%w: %v", errUnhealthy, err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: /api/ping answered %d", errUnhealthy, res.StatusCode)
	}
	return nil
}
