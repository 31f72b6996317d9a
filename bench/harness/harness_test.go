package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func needWrk(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Fatalf("wrk is not installed (apt-get install wrk): %v", err)
	}
}

// The status counts of countScript are what the exactness check rests on:
// every answer wrk saw is counted once, under its status.
func TestCountScriptCountsEveryAnswer(t *testing.T) {
	needWrk(t)
	var served, allowed atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if served.Add(1)%3 == 0 {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		allowed.Add(1)
	}))
	defer srv.Close()

	res, err := runWrk(context.Background(), t.TempDir(), load{url: srv.URL + "/", threads: 2, conns: 4, duration: time.Second, script: countScript})
	if err != nil {
		t.Fatal(err)
	}
	got200, got429 := res.Code(200), res.Code(429)
	if got200 == 0 || got429 == 0 || got200+got429 != res.Requests {
		t.Fatalf("got %d × 200 + %d × 429, want both > 0 and summing to the %d requests (codes %v)", got200, got429, res.Requests, res.Codes)
	}
	// wrk stops with up to one request per connection in flight: the
	// server may have answered those, wrk never counts them.
	if n := allowed.Load(); got200 > n || n > got200+4 {
		t.Fatalf("server allowed %d, wrk counted %d × 200", n, got200)
	}
	if res.P50US <= 0 || res.P99US < res.P50US || res.RPS() <= 0 {
		t.Fatalf("latency p50 %d µs, p99 %d µs, %f req/s", res.P50US, res.P99US, res.RPS())
	}
}

// registerScript sends JSON signups with an email of their own each.
func TestRegisterScriptSendsUniqueSignups(t *testing.T) {
	needWrk(t)
	var (
		mu     sync.Mutex
		emails = map[string]int{}
		bad    []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var s struct {
			Name, Email, Building string
			Calls                 int64
		}
		err := json.NewDecoder(r.Body).Decode(&s)
		mu.Lock()
		defer mu.Unlock()
		if err != nil || r.Method != "POST" || r.URL.Path != "/api/register" ||
			r.Header.Get("Content-Type") != "application/json" || s.Name == "" || s.Calls != 1000 {
			bad = append(bad, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type"))
		}
		emails[s.Email]++
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()

	res, err := runWrk(context.Background(), t.TempDir(), load{url: srv.URL + "/api/register", threads: 2, conns: 4, duration: time.Second, script: registerScript})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("malformed requests: %v", bad[:min(len(bad), 3)])
	}
	for e, n := range emails {
		if n != 1 || !strings.HasSuffix(e, "@example.com") {
			t.Fatalf("email %q sent %d times", e, n)
		}
	}
	if res.Code(201) == 0 || int64(len(emails)) < res.Code(201) {
		t.Fatalf("%d distinct emails, wrk saw %d × 201", len(emails), res.Code(201))
	}
}

// The flood sends every signup from an address of its own, with an email of
// its own: per-address limits cannot stop it.
func TestFloodScriptSendsNewAddresses(t *testing.T) {
	needWrk(t)
	var (
		mu    sync.Mutex
		addrs = map[string]int{}
		seen  = map[string]int{}
		bad   []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var s struct{ Name, Email string }
		err := json.NewDecoder(r.Body).Decode(&s)
		mu.Lock()
		defer mu.Unlock()
		xff := r.Header.Get("X-Forwarded-For")
		if err != nil || r.Method != "POST" || r.URL.Path != "/api/register" || net.ParseIP(xff).To4() == nil || s.Name == "" {
			bad = append(bad, r.Method+" "+r.URL.Path+" "+xff)
		}
		addrs[xff]++
		seen[s.Email]++
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()

	res, err := runWrk(context.Background(), t.TempDir(), load{url: srv.URL + "/api/register", threads: 2, conns: 4, duration: time.Second, script: floodScript})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("malformed requests: %v", bad[:min(len(bad), 3)])
	}
	if res.Code(201) == 0 || int64(len(addrs)) < min(res.Code(201), 2*65536) || int64(len(seen)) < res.Code(201) {
		t.Fatalf("%d addresses and %d emails for %d × 201", len(addrs), len(seen), res.Code(201))
	}
}

// Every process the supervisor starts is gone after stopAll; memory and
// CPU time are read from /proc.
func TestSupervisorStopsWhatItStarted(t *testing.T) {
	sup := newSupervisor(t.TempDir())
	p, err := sup.start("sleeper", "sleep", 0, nil, "60")
	if err != nil {
		t.Fatal(err)
	}
	m, err := readMemory(p)
	if err != nil {
		t.Fatal(err)
	}
	if m.rss <= 0 || m.hwm < m.rss || m.anon > m.rss {
		t.Fatalf("memory %+v", m)
	}
	if _, err := cpuTime(p); err != nil {
		t.Fatal(err)
	}
	sup.stopAll()
	select {
	case <-p.exited:
	default:
		t.Fatal("sleeper still running after stopAll")
	}
}

func TestTargets(t *testing.T) {
	run := func(rps float64, p99 int64) wrkResult {
		return wrkResult{Requests: int64(rps * 10), DurationUS: 10e6, P99US: p99}
	}
	base := func() *report {
		r := &report{
			auth:         serviceStats{name: "auth", binary: 8e6, readies: []time.Duration{5 * time.Millisecond}, idle: memory{rss: 8 << 20, anon: 1 << 20}, afterCalls: memory{rss: 9 << 20, anon: 2 << 20}, load: memory{hwm: 20 << 20}},
			registration: serviceStats{name: "registration", na: "n/a: not built"},
			authRuns:     []wrkResult{run(70, 1500)},
			refRuns:      []wrkResult{run(100, 1000)},
			manyRuns:     []wrkResult{run(55, 1500)},
			refManyRuns:  []wrkResult{run(100, 1000)},
			exact:        exactResult{limit: 10, hammered: hammered{allowed: 10, counter: 10, refused: 5, requests: 15}},
			rateExact:    rateExactResult{count: 100, run: 5 * time.Second, unread: 64, hammered: hammered{allowed: 550, counter: 550, refused: 9000, requests: 9550}},
		}
		return r
	}
	for _, c := range []struct {
		name   string
		change func(*report)
		target string
		want   string
	}{
		{"throughput at 70%", func(*report) {}, "auth throughput", "met"},
		{"throughput below 70%", func(r *report) { r.authRuns = []wrkResult{run(69, 1500)} }, "auth throughput", "**not met**"},
		{"p99 at 1.5×", func(*report) {}, "auth p99", "met"},
		{"p99 above 1.5×", func(r *report) { r.authRuns = []wrkResult{run(70, 1501)} }, "auth p99", "**not met**"},
		{"every call 200", func(*report) {}, "auth answers every call", "met"},
		{"a 500 under load", func(r *report) { r.authRuns[0].StatusErrors = 1 }, "auth answers every call", "**not met**"},
		{"a 500 under the many-keys load", func(r *report) { r.manyRuns[0].StatusErrors = 1 }, "auth answers every call", "**not met**"},
		{"many keys at 55%", func(*report) {}, "auth with 10000 keys: throughput", "met"},
		{"many keys below 55%", func(r *report) { r.manyRuns = []wrkResult{run(54, 1500)} }, "auth with 10000 keys: throughput", "**not met**"},
		{"many keys p99 above 1.5×", func(r *report) { r.manyRuns = []wrkResult{run(55, 1501)} }, "auth with 10000 keys: p99", "**not met**"},
		{"Redis CPU at 1.5× the hot key's", func(r *report) {
			r.authRuns[0].RedisCPU, r.manyRuns[0].RedisCPU = 700*2*time.Millisecond, 550*3*time.Millisecond
		}, "Redis CPU per allowed call", "met"},
		{"Redis CPU above 1.5× the hot key's", func(r *report) {
			r.authRuns[0].RedisCPU, r.manyRuns[0].RedisCPU = 700*2*time.Millisecond, 550*3*time.Millisecond+time.Millisecond
		}, "Redis CPU per allowed call", "**not met**"},
		{"rate exact", func(*report) {}, "a key's rate exact", "met"},
		{"rate: one more than its seconds allow", func(r *report) { r.rateExact.allowed, r.rateExact.counter = 601, 601 }, "a key's rate exact", "**not met**"},
		{"rate: a second without its calls", func(r *report) { r.rateExact.allowed, r.rateExact.counter = 399, 399 }, "a key's rate exact", "**not met**"},
		{"rate: calls wrk left unread counted", func(r *report) { r.rateExact.allowed = 486 }, "a key's rate exact", "met"},
		{"rate: more counted than wrk could leave unread", func(r *report) { r.rateExact.allowed = 485 }, "a key's rate exact", "**not met**"},
		{"rate: fewer counted than answered 200", func(r *report) { r.rateExact.counter = 549 }, "a key's rate exact", "**not met**"},
		{"rate: counted beyond its seconds", func(r *report) { r.rateExact.counter = 601 }, "a key's rate exact", "**not met**"},
		{"rate never reached", func(r *report) { r.rateExact.refused = 0 }, "a key's rate exact", "**not met**"},
		{"exact", func(*report) {}, "zero lost", "met"},
		{"one extra", func(r *report) { r.exact.allowed, r.exact.counter = 11, 11 }, "zero lost", "**not met**"},
		{"one lost", func(r *report) { r.exact.counter = 9 }, "zero lost", "**not met**"},
		{"limit never reached", func(r *report) { r.exact.refused = 0 }, "zero lost", "**not met**"},
		{"idle anonymous memory (VmRSS above 8 MiB: the binary's pages do not count)", func(*report) {}, "auth idle anonymous memory", "met"},
		{"idle anonymous memory after start", func(r *report) { r.auth.idle.anon = 2<<20 + 1 }, "auth idle anonymous memory", "**not met**"},
		{"idle anonymous memory after calls", func(r *report) { r.auth.afterCalls.anon = 2<<20 + 1 }, "auth idle anonymous memory", "**not met**"},
		{"load RSS", func(r *report) { r.auth.load.hwm = 25<<20 + 1 }, "auth RSS under load", "**not met**"},
		{"binary", func(r *report) { r.auth.binary = 12_000_001 }, "auth binary", "**not met**"},
		{"ready", func(r *report) { r.auth.readies = []time.Duration{101 * time.Millisecond} }, "auth start to ready", "**not met**"},
		{"registration not built", func(*report) {}, "registration idle anonymous memory", "n/a"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := base()
			c.change(r)
			var got *target
			for _, tg := range r.targets() {
				if strings.HasPrefix(tg.name, c.target) {
					got = &tg
					break
				}
			}
			if got == nil {
				t.Fatalf("no target %q", c.target)
			}
			if got.status != c.want {
				t.Fatalf("got %q (%s), want %q", got.status, got.measured, c.want)
			}
			if md := r.markdown(); !strings.Contains(md, "| "+got.name+" | "+got.measured+" | "+got.status+" |") {
				t.Fatalf("markdown lacks the row of %q:\n%s", got.name, md)
			}
		})
	}
}

// The many-keys script sends the seeded keys only, spread over all of them.
func TestManyKeysScriptSpreadsOverTheKeys(t *testing.T) {
	needWrk(t)
	const prefix, keys = "benchprefix", 50
	var mu sync.Mutex
	seen := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Header.Get("X-Pesto-Token")]++
		mu.Unlock()
	}))
	defer srv.Close()
	res, err := runWrk(context.Background(), t.TempDir(), load{url: srv.URL + "/", threads: 2, conns: 4, duration: time.Second, script: manyKeysScript(prefix, keys)})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for token := range seen {
		n, err := strconv.Atoi(strings.TrimPrefix(token, prefix))
		if !strings.HasPrefix(token, prefix) || len(token) != len(prefix)+5 || err != nil || n < 0 || n >= keys {
			t.Fatalf("unexpected token %q", token)
		}
	}
	if len(seen) != keys || res.Requests < 10*keys {
		t.Fatalf("%d distinct keys over %d requests, want all %d", len(seen), res.Requests, keys)
	}
}
