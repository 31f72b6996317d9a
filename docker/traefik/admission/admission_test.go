package admission

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"
)

// clock is a fake time.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newAdmission(t *testing.T, cfg *Config, next http.Handler) (*Admission, *clock) {
	t.Helper()
	h, err := New(context.Background(), next, cfg, "test")
	if err != nil {
		t.Fatal(err)
	}
	a := h.(*Admission)
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	a.now = c.now
	return a, c
}

var ok = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })

func config(rate, burst, inFlight int) *Config {
	c := CreateConfig()
	c.Rate, c.Burst, c.InFlight, c.Delay = rate, burst, inFlight, "0s"
	return c
}

func request(peer string, xff ...string) *http.Request {
	r := httptest.NewRequest("GET", "/api/execute", nil)
	r.RemoteAddr = peer
	for _, v := range xff {
		r.Header.Add("X-Forwarded-For", v)
	}
	return r
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// wantRefused wants Pesto's 429 with Retry-After seconds.
func wantRefused(t *testing.T, w *httptest.ResponseRecorder, seconds int) {
	t.Helper()
	if w.Code != 429 || w.Body.String() != `{"message":"Too many requests"}` {
		t.Fatalf("got %d %q, want 429 {\"message\":\"Too many requests\"}", w.Code, w.Body.String())
	}
	for name, want := range map[string]string{
		"Content-Type": "application/json", "Retry-After": strconv.Itoa(seconds), "X-Pesto-Error": "Too many requests",
	} {
		if got := w.Header().Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}

func TestBurstThenRate(t *testing.T) {
	a, clk := newAdmission(t, config(10, 20, 100), ok)
	for i := range 20 {
		if w := serve(a, request("192.0.2.1:1000")); w.Code != 204 {
			t.Fatalf("request %d of the burst: %d, want it let through", i+1, w.Code)
		}
	}
	wantRefused(t, serve(a, request("192.0.2.1:1001")), 1)
	// Another client has its own bucket.
	if w := serve(a, request("192.0.2.2:1000")); w.Code != 204 {
		t.Fatalf("another client: %d, want it let through", w.Code)
	}
	// A refused request spends nothing: 100 ms later, exactly one more (10/s).
	for range 5 {
		serve(a, request("192.0.2.1:1002"))
	}
	clk.add(100 * time.Millisecond)
	if w := serve(a, request("192.0.2.1:1003")); w.Code != 204 {
		t.Fatalf("after 100 ms: %d, want one request let through", w.Code)
	}
	wantRefused(t, serve(a, request("192.0.2.1:1004")), 1)
	// The bucket fills up to the burst, no further.
	clk.add(time.Hour)
	for range 20 {
		if w := serve(a, request("192.0.2.1:1005")); w.Code != 204 {
			t.Fatalf("after an hour: %d, want the burst let through", w.Code)
		}
	}
	wantRefused(t, serve(a, request("192.0.2.1:1006")), 1)
}

func TestRetryAfterCountsTheWait(t *testing.T) {
	// One request every 4 s: refused right after one, the next fits in 4 s.
	a, _ := newAdmission(t, &Config{Rate: 1, Burst: 1, InFlight: 1, MaxClients: 10, Delay: "0s"}, ok)
	serve(a, request("192.0.2.1:1"))
	a.rate /= 4
	wantRefused(t, serve(a, request("192.0.2.1:1")), 4)
}

func TestInFlight(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	slow := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		started <- struct{}{}
		<-release
		w.WriteHeader(http.StatusNoContent)
	})
	a, _ := newAdmission(t, config(1000, 1000, 3), slow)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); serve(a, request("192.0.2.1:1")) }()
	}
	for range 3 {
		<-started
	}
	wantRefused(t, serve(a, request("192.0.2.1:2")), 1)
	close(release)
	wg.Wait()
	if w := serve(a, request("192.0.2.1:3")); w.Code != 204 {
		t.Fatalf("after the three finished: %d, want it let through", w.Code)
	}
}

func TestClient(t *testing.T) {
	a, _ := newAdmission(t, config(1, 1, 1), ok)
	tests := []struct {
		name  string
		depth int
		req   *http.Request
		want  string
	}{
		{"IPv4 peer", 0, request("192.0.2.7:5555"), "192.0.2.7"},
		{"IPv6 peer, its /64", 0, request("[2001:db8:1:2:3:4:5:6]:5555"), "2001:db8:1:2::"},
		{"forwarded ignored at depth 0", 0, request("192.0.2.7:5555", "198.51.100.1"), "192.0.2.7"},
		{"depth 1: the last hop", 1, request("192.0.2.7:5555", "203.0.113.9, 198.51.100.1"), "198.51.100.1"},
		{"depth 2, over two headers", 2, request("192.0.2.7:5555", "203.0.113.9", "198.51.100.1"), "203.0.113.9"},
		{"depth beyond the hops: the peer", 3, request("192.0.2.7:5555", "198.51.100.1"), "192.0.2.7"},
		{"forwarded IPv6, its /64", 1, request("192.0.2.7:5555", "2001:db8::1"), "2001:db8::"},
		{"not an address", 1, request("192.0.2.7:5555", "unknown"), "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a.depth = tt.depth
			if got := a.clientOf(tt.req); got != tt.want {
				t.Errorf("client = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestIPv6ClientsShareTheir64(t *testing.T) {
	a, _ := newAdmission(t, config(1, 2, 10), ok)
	serve(a, request("[2001:db8:0:1::1]:1"))
	serve(a, request("[2001:db8:0:1::2]:1"))
	wantRefused(t, serve(a, request("[2001:db8:0:1:ffff::3]:1")), 1)
	if w := serve(a, request("[2001:db8:0:2::1]:1")); w.Code != 204 {
		t.Fatalf("another /64: %d, want it let through", w.Code)
	}
}

func TestMaxClients(t *testing.T) {
	a, clk := newAdmission(t, &Config{Rate: 1, Burst: 1, InFlight: 1, MaxClients: 2, Delay: "0s"}, ok)
	serve(a, request("192.0.2.1:1"))
	serve(a, request("192.0.2.2:1"))
	// A third client, with two remembered and neither forgettable yet:
	// let through, not counted.
	for range 3 {
		if w := serve(a, request("192.0.2.3:1")); w.Code != 204 {
			t.Fatalf("client beyond MaxClients: %d, want it let through", w.Code)
		}
	}
	if len(a.clients) != 2 {
		t.Fatalf("%d clients remembered, want 2", len(a.clients))
	}
	// A second later the first two have full buckets again: forgotten, and
	// the third is counted.
	clk.add(time.Second)
	serve(a, request("192.0.2.3:1"))
	wantRefused(t, serve(a, request("192.0.2.3:1")), 1)
	if len(a.clients) != 1 {
		t.Fatalf("%d clients remembered, want 1", len(a.clients))
	}
}

func TestDelay(t *testing.T) {
	cfg := config(1, 1, 1)
	cfg.Delay = "100ms"
	h, err := New(context.Background(), ok, cfg, "test")
	if err != nil {
		t.Fatal(err)
	}
	serve(h, request("192.0.2.1:1"))
	start := time.Now()
	wantRefused(t, serve(h, request("192.0.2.1:1")), 1)
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Errorf("refused after %v, want after the 100 ms delay", took)
	}
	// A client that goes away meanwhile gets nothing written.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w := serve(h, request("192.0.2.1:1").WithContext(ctx))
	if w.Code != 200 || w.Body.Len() != 0 || len(w.Header()) != 0 {
		t.Errorf("gone client: wrote %d %q %v, want nothing", w.Code, w.Body.String(), w.Header())
	}
}

func TestBadConfig(t *testing.T) {
	for name, cfg := range map[string]*Config{
		"no rate":        {Rate: 0, Burst: 1, InFlight: 1, MaxClients: 1, Delay: "1s"},
		"no burst":       {Rate: 1, Burst: 0, InFlight: 1, MaxClients: 1, Delay: "1s"},
		"no in-flight":   {Rate: 1, Burst: 1, InFlight: 0, MaxClients: 1, Delay: "1s"},
		"negative depth": {Rate: 1, Burst: 1, InFlight: 1, Depth: -1, MaxClients: 1, Delay: "1s"},
		"no clients":     {Rate: 1, Burst: 1, InFlight: 1, MaxClients: 0, Delay: "1s"},
		"bad delay":      {Rate: 1, Burst: 1, InFlight: 1, MaxClients: 1, Delay: "soon"},
		"negative delay": {Rate: 1, Burst: 1, InFlight: 1, MaxClients: 1, Delay: "-1s"},
	} {
		if _, err := New(context.Background(), ok, cfg, "test"); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}

// A 500 with no body (Traefik's, when the auth hook is down) gets the JSON
// body the SDKs parse; every other answer passes as it was written.
func TestEmptyInternalErrorGetsItsBody(t *testing.T) {
	for _, tc := range []struct {
		name        string
		next        http.HandlerFunc
		status      int
		body, ctype string
	}{
		{"500 with no body", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", "0")
			w.WriteHeader(http.StatusInternalServerError)
		}, 500, internalError, "application/json"},
		{"500 with an empty write", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write(nil)
		}, 500, internalError, "application/json"},
		{"500 with a body of its own", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte("upstream says no"))
		}, 500, "upstream says no", "text/plain"},
		{"200 with a body", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"ok":true}`))
		}, 200, `{"ok":true}`, "application/json"},
		{"502 with no body", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusBadGateway)
		}, 502, "", ""},
		{"429 with no body", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusTooManyRequests)
		}, 429, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := newAdmission(t, config(50, 100, 32), tc.next)
			w := serve(a, request("192.0.2.1:1234"))
			if w.Code != tc.status || w.Body.String() != tc.body || w.Header().Get("Content-Type") != tc.ctype {
				t.Errorf("got %d %q (%q), want %d %q (%q)", w.Code, w.Body.String(), w.Header().Get("Content-Type"), tc.status, tc.body, tc.ctype)
			}
			if tc.body == internalError && (w.Header().Get("X-Pesto-Error") != "Internal server error" || w.Header().Get("Content-Length") != "") {
				t.Errorf("headers %v, want X-Pesto-Error and no Content-Length of the empty answer", w.Header())
			}
		})
	}
}

// A streamed answer's header goes out at its first flush.
func TestFlushWritesTheHeldHeader(t *testing.T) {
	a, _ := newAdmission(t, config(50, 100, 32), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		w.(http.Flusher).Flush()
	}))
	w := serve(a, request("192.0.2.1:1234"))
	if w.Code != 500 || w.Body.Len() != 0 || !w.Flushed {
		t.Errorf("got %d %q flushed %v, want the 500 as written, flushed", w.Code, w.Body.String(), w.Flushed)
	}
}

// hijackable is a writer whose connection can be taken over.
type hijackable struct {
	*httptest.ResponseRecorder
	taken bool
}

func (h *hijackable) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h.taken = true
	return nil, nil, nil
}

// A protocol upgrade still takes the connection over through the plugin;
// a writer that cannot says so.
func TestHijackPassesThrough(t *testing.T) {
	a, _ := newAdmission(t, config(50, 100, 32), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if _, _, err := w.(http.Hijacker).Hijack(); err != nil {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	h := &hijackable{ResponseRecorder: httptest.NewRecorder()}
	a.ServeHTTP(h, request("192.0.2.1:1234"))
	if !h.taken || h.Body.Len() != 0 {
		t.Errorf("taken %v, body %q: want the connection taken over and nothing written", h.taken, h.Body.String())
	}
	w := serve(a, request("192.0.2.1:1234"))
	if w.Code != 500 || w.Body.String() != internalError {
		t.Errorf("a writer that cannot be taken over: %d %q", w.Code, w.Body.String())
	}
	if got := http.NewResponseController(&bodiedErrors{ResponseWriter: h}).Flush(); got != nil {
		t.Errorf("Flush through the controller: %v", got)
	}
}
