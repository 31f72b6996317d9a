// Package admission is the gateway's admission of each client: a Traefik
// middleware plugin, which Traefik runs from this source with its Go
// interpreter (Yaegi; standard library only), placed before the auth hook.
//
// A client is the connection's peer address (an IPv6 address counts by its
// /64), or, with Depth n, the n-th address from the right of
// X-Forwarded-For (n trusted proxies in front of the gateway). Each client
// may have InFlight requests being answered at once and send Rate requests
// a second, Burst of them at once. A request over either limit never
// reaches the hook or the services behind it; it is answered after Delay
// (a second by default):
//
//	HTTP/1.1 429 Too Many Requests
//	Content-Type: application/json
//	Retry-After: 1
//	X-Pesto-Error: Too many requests
//
//	{"message":"Too many requests"}
//
// the answer Pesto's SDKs read as rate-limited (only "Monthly limit
// exceeded" is the monthly quota). The delay is what keeps one client's
// flood cheap: a client that ignores Retry-After and sends again at once
// gets one answer a second per connection, not as many as the gateway can
// write, so the clients within their limits keep their share of the CPU. Traefik's own inFlightReq and rateLimit
// answer text/plain, which the JavaScript SDK cannot parse, and its errors
// middleware, the only way to change their body, would also replace auth's
// own 429s, which carry the quota headers.
//
// An admitted request whose answer is a 500 with no body (Traefik's own,
// when the auth hook cannot be reached) gets the body the other proxies'
// recipes give it, which the JavaScript SDK can parse (it reads every 500's
// body as JSON; an empty one made it throw a parse error instead of its
// InternalServerError):
//
//	HTTP/1.1 500 Internal Server Error
//	Content-Type: application/json
//	X-Pesto-Error: Internal server error
//
//	{"message":"Internal server error"}
//
// At most MaxClients clients are remembered; when that many are, those with
// nothing in flight and a full bucket are forgotten (at most once a second),
// and a client beyond them is admitted without being counted: a flood from
// that many addresses needs protection in front of the machine.
package admission

import (
	"bufio"
	"context"
	"errors"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config is the middleware's options, from the gateway's dynamic
// configuration (docker/traefik/dynamic.yaml).
type Config struct {
	// Rate is the requests a second one client may keep up.
	Rate int `json:"rate,omitempty"`
	// Burst is how many requests one client may send at once.
	Burst int `json:"burst,omitempty"`
	// InFlight is the most requests of one client being answered at once.
	InFlight int `json:"inFlight,omitempty"`
	// Depth is 0 when the connection's peer is the client; n > 0 takes the
	// n-th address from the right of X-Forwarded-For.
	Depth int `json:"depth,omitempty"`
	// MaxClients bounds the clients remembered at once.
	MaxClients int `json:"maxClients,omitempty"`
	// Delay is how long a refused request waits for its answer, a Go
	// duration ("1s"); "0s" answers at once.
	Delay string `json:"delay,omitempty"`
}

// CreateConfig returns the defaults, which the configuration overrides.
func CreateConfig() *Config {
	return &Config{Rate: 50, Burst: 100, InFlight: 32, MaxClients: 10000, Delay: "1s"}
}

// tooMany is the body of a refused request.
const tooMany = `{"message":"Too many requests"}`

// internalError is the body of a 500 that had none.
const internalError = `{"message":"Internal server error"}`

// client is what is known of one client.
type client struct {
	tokens   float64 // requests it may send now, at most the burst
	last     int64   // when tokens was last brought up to date, Unix nanoseconds
	inFlight int
}

// Admission admits each client's requests within its limits.
type Admission struct {
	next       http.Handler
	rate       float64 // tokens a nanosecond
	burst      float64
	inFlight   int
	depth      int
	maxClients int
	delay      time.Duration
	now        func() time.Time

	mu        sync.Mutex
	clients   map[string]*client
	lastSweep int64
}

// New makes the middleware in front of next.
func New(_ context.Context, next http.Handler, config *Config, _ string) (http.Handler, error) {
	if config.Rate < 1 || config.Burst < 1 || config.InFlight < 1 || config.Depth < 0 || config.MaxClients < 1 {
		return nil, errors.New("admission: rate, burst, inFlight and maxClients must be at least 1, depth at least 0")
	}
	delay, err := time.ParseDuration(config.Delay)
	if err != nil || delay < 0 {
		return nil, errors.New("admission: delay must be a duration of 0s or more, such as 1s")
	}
	return &Admission{
		next:       next,
		rate:       float64(config.Rate) / float64(time.Second),
		burst:      float64(config.Burst),
		inFlight:   config.InFlight,
		depth:      config.Depth,
		maxClients: config.MaxClients,
		delay:      delay,
		now:        time.Now,
		clients:    make(map[string]*client),
	}, nil
}

func (a *Admission) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	who := a.clientOf(req)
	c, wait := a.admit(who)
	if wait > 0 {
		if a.delay > 0 {
			t := time.NewTimer(a.delay)
			select {
			case <-req.Context().Done(): // the client has gone
				t.Stop()
				return
			case <-t.C:
			}
		}
		refuse(rw, wait)
		return
	}
	if c != nil {
		defer a.done(c)
	}
	w := &bodiedErrors{ResponseWriter: rw}
	a.next.ServeHTTP(w, req)
	w.finish()
}

// bodiedErrors holds back a 500's header until its body comes, and gives a
// 500 that ends with none the body internalError.
type bodiedErrors struct {
	http.ResponseWriter
	held    bool // a 500 whose header is not written yet
	written bool // the header is written
}

func (w *bodiedErrors) WriteHeader(code int) {
	if w.written || w.held {
		return
	}
	if code == http.StatusInternalServerError {
		w.held = true
		return
	}
	w.written = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *bodiedErrors) Write(b []byte) (int, error) {
	if len(b) == 0 && w.held && !w.written {
		return 0, nil // still no body
	}
	w.release()
	return w.ResponseWriter.Write(b)
}

// Flush writes a held header first: the answer is being streamed.
func (w *bodiedErrors) Flush() {
	w.release()
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack hands the connection over (a protocol upgrade), when the writer
// beneath can.
func (w *bodiedErrors) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("admission: the connection cannot be taken over")
	}
	w.written = true
	return h.Hijack()
}

// Unwrap is the writer beneath, for http.ResponseController.
func (w *bodiedErrors) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// release writes the held 500's header as it was.
func (w *bodiedErrors) release() {
	if w.held && !w.written {
		w.ResponseWriter.WriteHeader(http.StatusInternalServerError)
	}
	w.written = true
}

// finish gives a 500 that ended with no body its body.
func (w *bodiedErrors) finish() {
	if !w.held || w.written {
		return
	}
	w.written = true
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Pesto-Error", "Internal server error")
	h.Del("Content-Length")
	w.ResponseWriter.WriteHeader(http.StatusInternalServerError)
	_, _ = w.ResponseWriter.Write([]byte(internalError))
}

// admit takes one request of client who. It returns the client's record
// (nil when it is not counted) and 0, or the seconds to wait when the
// request is refused.
func (a *Admission) admit(who string) (*client, int) {
	now := a.now().UnixNano()
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.clients[who]
	if c == nil {
		if len(a.clients) >= a.maxClients {
			a.sweep(now)
			if len(a.clients) >= a.maxClients {
				return nil, 0
			}
		}
		c = &client{tokens: a.burst, last: now}
		a.clients[who] = c
	}
	c.tokens = math.Min(a.burst, c.tokens+float64(now-c.last)*a.rate)
	c.last = now
	if c.inFlight >= a.inFlight {
		return nil, 1
	}
	if c.tokens < 1 {
		return nil, int(math.Ceil((1 - c.tokens) / a.rate / float64(time.Second)))
	}
	c.tokens--
	c.inFlight++
	return c, 0
}

func (a *Admission) done(c *client) {
	a.mu.Lock()
	c.inFlight--
	a.mu.Unlock()
}

// sweep forgets the clients that would be new again: nothing in flight and
// a full bucket. At most once a second; a.mu is held.
func (a *Admission) sweep(now int64) {
	if now-a.lastSweep < int64(time.Second) {
		return
	}
	a.lastSweep = now
	for who, c := range a.clients {
		if c.inFlight == 0 && c.tokens+float64(now-c.last)*a.rate >= a.burst {
			delete(a.clients, who)
		}
	}
}

// clientOf names the client of req: its address, an IPv6 one cut to its /64.
func (a *Admission) clientOf(req *http.Request) string {
	addr := ""
	if a.depth > 0 {
		var hops []string
		for _, v := range req.Header.Values("X-Forwarded-For") {
			hops = append(hops, strings.Split(v, ",")...)
		}
		if len(hops) >= a.depth {
			addr = strings.TrimSpace(hops[len(hops)-a.depth])
		}
	}
	if addr == "" {
		addr = req.RemoteAddr
		if host, _, err := net.SplitHostPort(addr); err == nil {
			addr = host
		}
	}
	ip := net.ParseIP(addr)
	if ip == nil {
		return addr
	}
	if ip.To4() == nil {
		return ip.Mask(net.CIDRMask(64, 128)).String()
	}
	return ip.String()
}

func refuse(rw http.ResponseWriter, wait int) {
	h := rw.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Retry-After", strconv.Itoa(wait))
	h.Set("X-Pesto-Error", "Too many requests")
	rw.WriteHeader(http.StatusTooManyRequests)
	_, _ = rw.Write([]byte(tooMany))
}
