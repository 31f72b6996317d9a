// Package server is the HTTP plumbing both services share: the fiber app
// with its timeouts, /healthz, /metrics, request metrics, and the listen /
// graceful-drain lifecycle.
package server

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v3"
	"github.com/valyala/fasthttp"

	"pesto/shared/metrics"
)

// Timeouts of every connection: a slow or idle client cannot hold a
// connection longer than these.
const (
	ReadTimeout  = 10 * time.Second
	WriteTimeout = 10 * time.Second
	IdleTimeout  = 120 * time.Second // above the proxies' idle timeouts (Traefik: 90 s)

	// HealthTimeout bounds the Redis PING of /healthz.
	HealthTimeout = time.Second
)

// Options configure New.
type Options struct {
	// Health reports whether the service can serve; /healthz answers 503
	// when it returns an error. Called with a deadline of HealthTimeout.
	Health func(ctx context.Context) error
	// ErrorHandler turns every error a handler returns, and every request
	// the HTTP layer rejects (as a *fiber.Error), into a response.
	ErrorHandler fiber.ErrorHandler
	Metrics      *metrics.Registry
	// BodyLimit is the largest request body read; larger ones are refused
	// with fiber.ErrRequestEntityTooLarge before any handler runs, and no
	// more than BodyLimit bytes of a body are ever buffered (a declared
	// Content-Length over it is refused before its body is read; a chunked
	// body as soon as it passes it). Zero means 4 KiB.
	BodyLimit int
	// Timeouts of each connection; zero values mean the defaults above.
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// AnyMethod serves a request whose method fiber does not know (WebDAV's
	// PROPFIND, say) as a GET; otherwise such a request goes to the error
	// handler as fiber.ErrMethodNotAllowed.
	AnyMethod bool
}

// New returns a fiber app with the timeouts above, request metrics, and the
// routes GET /healthz and GET /metrics, which are neither logged nor counted.
func New(o Options) *fiber.App {
	if o.BodyLimit == 0 {
		o.BodyLimit = 4 << 10
	}
	o.ReadTimeout = cmp.Or(o.ReadTimeout, ReadTimeout)
	o.WriteTimeout = cmp.Or(o.WriteTimeout, WriteTimeout)
	o.IdleTimeout = cmp.Or(o.IdleTimeout, IdleTimeout)
	cfg := fiber.Config{
		ErrorHandler:              o.ErrorHandler,
		BodyLimit:                 o.BodyLimit,
		ReadTimeout:               o.ReadTimeout,
		WriteTimeout:              o.WriteTimeout,
		IdleTimeout:               o.IdleTimeout,
		ReadBufferSize:            8 << 10, // largest request head; larger gets 400
		DisableDefaultContentType: true,    // an empty 200 carries no Content-Type
		// No service reads multipart forms; fasthttp would otherwise parse
		// them before any handler, spilling large files to disk.
		DisablePreParseMultipartForm: true,
	}
	app := fiber.New(cfg)

	app.Get("/healthz", func(c fiber.Ctx) error {
		ctx, cancel := context.WithTimeout(context.Background(), HealthTimeout)
		defer cancel()
		c.Set(fiber.HeaderContentType, fiber.MIMETextPlainCharsetUTF8)
		if o.Health != nil {
			if err := o.Health(ctx); err != nil {
				return c.Status(fiber.StatusServiceUnavailable).SendString("Unavailable")
			}
		}
		return c.SendString("OK")
	})
	app.Get("/metrics", func(c fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, "text/plain; version=0.0.4; charset=utf-8")
		_, err := o.Metrics.WriteTo(c.Response().BodyWriter())
		return err
	})
	app.Use(requestMetrics(o.Metrics, o.ErrorHandler))
	unknownMethods(app, o)
	return app
}

// unknownMethods routes the requests whose method fiber does not know,
// which it would answer with a bare 501 before any route or error handler.
func unknownMethods(app *fiber.App, o Options) {
	srv := app.Server()
	next := srv.Handler
	srv.Handler = func(fctx *fasthttp.RequestCtx) {
		if slices.Contains(fiber.DefaultMethods, string(fctx.Method())) {
			next(fctx)
			return
		}
		if o.AnyMethod {
			fctx.Request.Header.SetMethod(fiber.MethodGet)
			next(fctx)
			return
		}
		c := app.AcquireCtx(fctx)
		defer app.ReleaseCtx(c)
		_ = o.ErrorHandler(c, fiber.ErrMethodNotAllowed)
	}
}

type routeStatus struct {
	route  string
	status int
}

// requestMetrics counts requests by route and status and observes their
// latency by route. It runs the error handler itself, so that the status it
// counts is the one the client gets.
func requestMetrics(reg *metrics.Registry, onError fiber.ErrorHandler) fiber.Handler {
	var (
		mu       sync.RWMutex
		counters = map[routeStatus]*metrics.Counter{}
		latency  = map[string]*metrics.Histogram{}
	)
	lookup := func(k routeStatus) (*metrics.Counter, *metrics.Histogram) {
		mu.RLock()
		c, h := counters[k], latency[k.route]
		mu.RUnlock()
		if c != nil && h != nil {
			return c, h
		}
		mu.Lock()
		defer mu.Unlock()
		c = reg.Counter("pesto_http_requests_total", "HTTP requests by route and status.",
			"route", k.route, "status", strconv.Itoa(k.status))
		h = reg.Histogram("pesto_http_request_duration_seconds", "HTTP request latency by route.",
			metrics.DefBuckets, "route", k.route)
		counters[k], latency[k.route] = c, h
		return c, h
	}
	return func(c fiber.Ctx) error {
		start := time.Now()
		if err := c.Next(); err != nil {
			if herr := onError(c, err); herr != nil {
				return herr
			}
		}
		k := routeStatus{route: c.Route().Path, status: c.Response().StatusCode()}
		if k.status == fiber.StatusNotFound || k.status == fiber.StatusMethodNotAllowed {
			k.route = "unmatched" // keep the label set small whatever clients send
		}
		count, hist := lookup(k)
		count.Inc()
		hist.Since(start)
		return nil
	}
}

// Serve listens on addr, serves app until ctx is done, then stops accepting
// and drains in-flight requests for up to drain. A connection the server
// closes is closed gracefully (see lingerConn): a client still sending
// reads its answer rather than a reset. ready, when not nil, is
// called with the bound address once the listener is open.
func Serve(ctx context.Context, app *fiber.App, addr string, drain time.Duration, log *slog.Logger, ready func(net.Addr)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		errc <- app.Listener(lingerListener{ln}, fiber.ListenConfig{DisableStartupMessage: true})
	}()
	log.Info("listening", "addr", ln.Addr().String())
	if ready != nil {
		ready(ln.Addr())
	}

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "drain", drain.String())
	if err := app.ShutdownWithTimeout(drain); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// Healthcheck asks GET /healthz on 127.0.0.1:port and returns the exit code
// of the healthcheck subcommand: 0 when it answers 200 within 2 s, else 1.
// It needs no shell and no HTTP client library, for images built FROM scratch.
func Healthcheck(port string) int {
	if err := probe(net.JoinHostPort("127.0.0.1", port), 2*time.Second); err != nil {
		return 1
	}
	return 0
}

func probe(addr string, timeout time.Duration) error {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "HTTP/1.1 200 ") && !strings.HasPrefix(line, "HTTP/1.0 200 ") {
		return fmt.Errorf("healthz: %s", strings.TrimSpace(line))
	}
	return nil
}
