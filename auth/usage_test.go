package main

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"

	"github.com/gofiber/fiber/v3"

	"pesto/shared/redistest"
	"pesto/shared/servicetest"
)

// usageCall sends GET /api/usage through app.Test.
func usageCall(t *testing.T, app *fiber.App, method string, header http.Header) answer {
	t.Helper()
	return appCall(t, app, method, "/api/usage", header)
}

// Every answer of GET /api/usage, status, body and headers exactly, and no
// call counted by asking.
func TestUsage(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok-used", `{"UserEmail":"used@example.com","MonthlyLimit":100,"Revoked":false}`)
	rs.Do("SET", counterNov+"used@example.com", "59")
	rs.Do("SET", "tok-fresh", `{"UserEmail":"fresh@example.com","MonthlyLimit":10,"Revoked":false}`)
	rs.Do("SET", "tok-over", `{"UserEmail":"over@example.com","MonthlyLimit":3,"Revoked":false}`)
	rs.Do("SET", counterNov+"over@example.com", "4") // an old service's N+1
	rs.Do("SET", "tok-expiring", `{"UserEmail":"exp@example.com","MonthlyLimit":5,"Revoked":false}`, "EX", "7200")
	rs.Do("SET", "TRIAL-tok", `{"UserEmail":"trial-abc@pesto.teknologiumum.com","MonthlyLimit":10,"Revoked":false}`, "EX", "86400")
	rs.Do("SET", "tok-revoked", `{"UserEmail":"rev@example.com","MonthlyLimit":3,"Revoked":true}`)
	rs.Do("SET", "tok-corrupt", `{"UserEmail":`)
	rs.Do("SET", "tok-legacy", `{"email":"legacy@example.com","limit":7}`)
	rs.Do("SET", "counter/2026-11/legacy@example.com", "2")
	app, _ := newTestApp(t, rs, map[string]string{"USAGE_RATE": "1000/s", "USAGE_GLOBAL_RATE": "1000000/s"}, endOfMonth)

	const reset = `"reset":"2026-12-01T00:00:00Z"`
	for _, c := range []struct {
		name, token string // token "-": no header
		status      int
		body        string
		rate        [2]string // RateLimit-Policy, RateLimit; empty: none
	}{
		{"used", "tok-used", 200, `{"limit":100,"used":59,"remaining":41,` + reset + `}`,
			[2]string{`"monthly";q=100;w=2592000`, `"monthly";r=41;t=60`}},
		{"nothing used yet", "tok-fresh", 200, `{"limit":10,"used":0,"remaining":10,` + reset + `}`,
			[2]string{`"monthly";q=10;w=2592000`, `"monthly";r=10;t=60`}},
		{"over the limit", "tok-over", 200, `{"limit":3,"used":4,"remaining":0,` + reset + `}`,
			[2]string{`"monthly";q=3;w=2592000`, `"monthly";r=0;t=60`}},
		{"expiring key", "tok-expiring", 200, `{"limit":5,"used":0,"remaining":5,` + reset + `,"expires":"2026-12-01T01:59:00Z"}`,
			[2]string{`"monthly";q=5;w=2592000`, `"monthly";r=5;t=60`}},
		{"legacy record", "tok-legacy", 200, `{"limit":7,"used":2,"remaining":5,` + reset + `}`,
			[2]string{`"monthly";q=7;w=2592000`, `"monthly";r=5;t=60`}},
		{"unmetered", "TRIAL-tok", 200, `{"unmetered":true,` + reset + `,"expires":"2026-12-01T23:59:00Z"}`, [2]string{}},
		{"no header", "-", 401, `{"message":"Token must be supplied"}`, [2]string{}},
		{"empty header", "", 401, `{"message":"Token must be supplied"}`, [2]string{}},
		{"malformed", "waiting-list", 401, `{"message":"Token not registered"}`, [2]string{}},
		{"unknown", "tok-missing", 401, `{"message":"Token not registered"}`, [2]string{}},
		{"revoked", "tok-revoked", 401, `{"message":"Token has been revoked"}`, [2]string{}},
		{"corrupt", "tok-corrupt", 500, `{"message":"Internal server error"}`, [2]string{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{}
			if c.token != "-" {
				h[headerToken] = []string{c.token}
			}
			got := usageCall(t, app, "GET", h)
			if got.Status != c.status || got.Body != c.body {
				t.Fatalf("got %d %s, want %d %s", got.Status, got.Body, c.status, c.body)
			}
			if ct := got.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if rate := [2]string{got.Header.Get("RateLimit-Policy"), got.Header.Get("RateLimit")}; rate != c.rate {
				t.Errorf("RateLimit-Policy, RateLimit = %q, want %q", rate, c.rate)
			}
			if c.status != 200 && got.Header.Get("X-Pesto-Error") == "" {
				t.Errorf("no X-Pesto-Error on a %d", c.status)
			}
		})
	}
	// Asking counts nothing, and creates no counter.
	for key, want := range map[string]string{
		counterNov + "used@example.com":                  "59",
		counterNov + "over@example.com":                  "4",
		counterNov + "fresh@example.com":                 "",
		counterNov + "trial-abc@pesto.teknologiumum.com": "",
	} {
		if got := rs.Do("GET", key); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	// HEAD answers like GET, without the body; other methods are not routed.
	if got := usageCall(t, app, "HEAD", tokenHeader("tok-used")); got.Status != 200 || got.Body != "" {
		t.Errorf("HEAD: %d %q", got.Status, got.Body)
	}
	if got := usageCall(t, app, "POST", tokenHeader("tok-used")); got.Status != 404 || got.Body != `{"message":"Not found"}` {
		t.Errorf("POST: %d %q", got.Status, got.Body)
	}
	// The hook after asking: the usage is what the next call spends.
	if got := testCall(t, app, "GET", tokenHeader("tok-used")); got.Status != 200 || got.Header.Get("RateLimit-Remaining") != "40" {
		t.Errorf("hook after usage: %d %v", got.Status, got.Header)
	}
	if got := usageCall(t, app, "GET", tokenHeader("tok-used")); got.Body != `{"limit":100,"used":60,"remaining":40,`+reset+`}` {
		t.Errorf("usage after a call: %s", got.Body)
	}
}

// /api/usage shows the key's rate and what is left of it, in the body and
// in both policies' fields, and asking spends none of it.
func TestUsageShowsTheRate(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok-rate", `{"UserEmail":"rate@example.com","MonthlyLimit":100,"Revoked":false,"Rate":"5/s"}`)
	rs.Do("SET", "tok-burst", `{"UserEmail":"burst@example.com","MonthlyLimit":100,"Revoked":false,"Rate":"60/m;burst=2"}`)
	rs.Do("SET", "tok-default", `{"UserEmail":"default@example.com","MonthlyLimit":100,"Revoked":false}`)
	rs.Do("SET", "tok-off", `{"UserEmail":"off@example.com","MonthlyLimit":100,"Revoked":false,"Rate":"off"}`)
	app, _ := newTestApp(t, rs, map[string]string{"USAGE_RATE": "1000/s", "USAGE_GLOBAL_RATE": "1000000/s", "KEY_RATE": "7/m"}, endOfMonth)
	for range 2 {
		testCall(t, app, "GET", tokenHeader("tok-rate"))
	}
	testCall(t, app, "GET", tokenHeader("tok-burst"))

	const reset = `"reset":"2026-12-01T00:00:00Z"`
	for _, c := range []struct {
		name, token, body, policy, fields string
	}{
		{"two calls of five", "tok-rate", `{"limit":100,"used":2,"remaining":98,` + reset + `,"rate":{"limit":5,"window":1,"remaining":3,"reset":1}}`,
			`"rate";q=5;w=1, "monthly";q=100;w=2592000`, `"rate";r=3;t=1, "monthly";r=98;t=60`},
		{"burst", "tok-burst", `{"limit":100,"used":1,"remaining":99,` + reset + `,"rate":{"limit":60,"window":60,"burst":2,"remaining":1,"reset":1}}`,
			`"rate";q=60;w=60;pesto-burst=2, "monthly";q=100;w=2592000`, `"rate";r=1;t=1, "monthly";r=99;t=60`},
		{"the default, nothing spent", "tok-default", `{"limit":100,"used":0,"remaining":100,` + reset + `,"rate":{"limit":7,"window":60,"remaining":7,"reset":0}}`,
			`"rate";q=7;w=60, "monthly";q=100;w=2592000`, `"rate";r=7;t=0, "monthly";r=100;t=60`},
		{"off", "tok-off", `{"limit":100,"used":0,"remaining":100,` + reset + `}`,
			`"monthly";q=100;w=2592000`, `"monthly";r=100;t=60`},
	} {
		for range 2 { // asking spends nothing
			got := usageCall(t, app, "GET", tokenHeader(c.token))
			if got.Status != 200 || got.Body != c.body {
				t.Fatalf("%s: got %d %s\nwant 200 %s", c.name, got.Status, got.Body, c.body)
			}
			if p, f := got.Header.Get("RateLimit-Policy"), got.Header.Get("RateLimit"); p != c.policy || f != c.fields {
				t.Errorf("%s: RateLimit-Policy %q, RateLimit %q\nwant %q, %q", c.name, p, f, c.policy, c.fields)
			}
		}
	}
	if hasWindow(rs, counterNov+"default@example.com") {
		t.Error("asking wrote a window")
	}
}

// /api/usage is bounded per client IP (USAGE_RATE), whatever the key and
// whichever replica answers; clients behind a trusted proxy are told apart
// by X-Forwarded-For, and a refused request reads nothing.
func TestUsageRateLimit(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok", `{"UserEmail":"rl@example.com","MonthlyLimit":10,"Revoked":false}`)
	env := map[string]string{"REDIS_URL": rs.URL, "USAGE_RATE": "3/h", "TRUSTED_PROXIES": "127.0.0.1"}
	a, b := startAuth(t, env), startAuth(t, env)
	ask := func(base, token, client string) answer {
		t.Helper()
		req, _ := http.NewRequest("GET", base+"/api/usage", nil)
		req.Header.Set(headerToken, token)
		req.Header.Set("X-Forwarded-For", client)
		status, body, header := servicetest.Do(t, httpClient, req)
		return answer{status, body, header}
	}
	for i, c := range []struct {
		base, token, client string
		status              int
	}{
		{a.URL, "tok", "192.0.2.1", 200},
		{b.URL, "tok-guess-1", "192.0.2.1", 401},
		{a.URL, "tok-guess-2", "192.0.2.1", 401},
		{b.URL, "tok", "192.0.2.1", 429}, // the fourth of 3/h, on the other replica
		{a.URL, "tok-guess-3", "192.0.2.1", 429},
		{a.URL, "tok", "192.0.2.2", 200}, // another client
		{a.URL, "tok", "2001:db8:1:2::1", 200},
		{a.URL, "tok", "2001:db8:1:2::2", 200},
		{a.URL, "tok", "2001:db8:1:2::3", 200},
		{b.URL, "tok", "2001:db8:1:2:ffff::1", 429}, // the same /64
		{b.URL, "tok", "2001:db8:1:3::1", 200},
	} {
		got := ask(c.base, c.token, c.client)
		if got.Status != c.status {
			t.Fatalf("request %d (%s from %s): got %d %s, want %d", i, c.token, c.client, got.Status, got.Body, c.status)
		}
		if c.status == 429 {
			if got.Body != `{"message":"Too many requests"}` || got.Header.Get("X-Pesto-Error") != "Too many requests" {
				t.Errorf("request %d: %s %v", i, got.Body, got.Header)
			}
			if ra, err := strconv.Atoi(got.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 1200 {
				t.Errorf("request %d: Retry-After = %q, want 1..1200 (a third of the hour at most)", i, got.Header.Get("Retry-After"))
			}
		}
	}
	p := "pesto:ratelimit:{usage}:"
	want := []string{p + "192.0.2.1", p + "192.0.2.2", p + "2001:db8:1:2::/64", p + "2001:db8:1:3::/64",
		p + "2001:db8:1::/48", p + "2001:db8:1::/56", p + "all"}
	if got := rs.Keys(p + "*"); !slices.Equal(got, want) {
		t.Errorf("buckets = %q, want %q", got, want)
	}
	// The hook itself is not limited by it.
	if got := call(t, "GET", a.URL, "tok"); got.Status != 200 {
		t.Errorf("hook: %d %s", got.Status, got.Body)
	}
}

// The attack: a client with a /48 asks from a new /64 each time (65,536 of
// them), or a client with many addresses from a new one each time, to look
// keys up faster than USAGE_RATE. Before, /api/usage counted /64s only and
// had no global cap (7,492 lookups a second, no 429). Now an IPv6 client
// counts at its /64, /56 and /48 (IPV6_RATE_PREFIXES, as registration) and
// every client together at USAGE_GLOBAL_RATE, shared by the replicas: a
// refused request looks nothing up.
func TestUsageRateLimitPrefixesAndGlobal(t *testing.T) {
	rs := redistest.StartStandalone(t) // its command counts (TestUsageRateLimit runs on a Cluster too)
	rs.Do("SET", "tok", `{"UserEmail":"rl@example.com","MonthlyLimit":10,"Revoked":false}`)
	env := map[string]string{"REDIS_URL": rs.URL, "USAGE_RATE": "2/h", "USAGE_GLOBAL_RATE": "20/h", "TRUSTED_PROXIES": "127.0.0.1"}
	replicas := []*authInstance{startAuth(t, env), startAuth(t, env)}
	ask := func(i int, client string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", replicas[i%2].URL+"/api/usage", nil)
		req.Header.Set(headerToken, "tok")
		req.Header.Set("X-Forwarded-For", client)
		status, _, _ := servicetest.Do(t, httpClient, req)
		return status
	}
	tally := func(statuses []int) (ok, limited int) {
		for _, s := range statuses {
			switch s {
			case 200:
				ok++
			case 429:
				limited++
			default:
				t.Fatalf("status %d", s)
			}
		}
		return ok, limited
	}
	before := commandCalls(t, rs, "pttl")
	var statuses []int
	for i := range 30 { // a new /64 of one /48 each time
		statuses = append(statuses, ask(i, fmt.Sprintf("2001:db8:1:%x00::1", i))) // each in its own /56
	}
	if ok, limited := tally(statuses); ok != 8 || limited != 22 {
		t.Fatalf("30 /64s of one /48: %d allowed, %d refused; want 8 (its /48 at 4 × 2/h) and 22", ok, limited)
	}
	statuses = statuses[:0]
	for i := range 30 { // a new IPv4 address each time
		statuses = append(statuses, ask(i, fmt.Sprintf("198.51.100.%d", i+1)))
	}
	if ok, limited := tally(statuses); ok != 12 || limited != 18 {
		t.Fatalf("30 IPv4 addresses: %d allowed, %d refused; want 12 (what is left of the global 20/h) and 18", ok, limited)
	}
	// A refused request looks nothing up: one record lookup (GET and PTTL)
	// per 200.
	if n := commandCalls(t, rs, "pttl") - before; n != 20 {
		t.Fatalf("%d record lookups for 20 answered requests, want 20", n)
	}
}
