package deploy

import (
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pesto/shared/redistest"
	"pesto/shared/servicetest"
	"pesto/shared/wire"
)

// The recipes under test, exactly as users copy them.
const (
	nginxRecipe = "../docker/nginx/pesto.conf"
	caddyRecipe = "../docker/caddy/Caddyfile"
)

// front is one way for a client to reach the hook: auth itself, or a proxy
// in front of the API.
type front struct {
	name string
	url  string // base URL
	// viaProxy: a 200 of auth reaches the stand-in upstream, which answers
	// "upstream ok".
	viaProxy bool
	// notFound is the proxy's answer to a path it does not route, and
	// authDown its answer when auth cannot be reached. The recipes answer
	// JSON; Traefik has no static answers: its own 404 text (the SDKs read
	// no 404's body), and its 500 with no body, which the admission plugin
	// gives the recipes' JSON body (the JavaScript SDK parses every 500's).
	notFound, authDown answer
}

var (
	jsonNotFound  = answer{status: 404, body: `{"message":"Not found"}`}
	jsonAuthDown  = answer{status: 500, body: `{"message":"Internal server error"}`}
	traefikAbsent = answer{status: 404, body: "404 page not found\n"}
)

// Keys seeded for every front (the quota key is per front, see quotaKey).
const (
	validKey   = "valid-key-000000000000000000000000000000000000000000000000000000"
	revokedKey = "revoked-key-00000000000000000000000000000000000000000000000000000"
	corruptKey = "corrupt-key-00000000000000000000000000000000000000000000000000000"
)

// The valid key has no rate (the admission test holds 32 of its calls at
// once); the others have the default, KEY_RATE's 10/s.
var seeded = map[string]string{
	validKey:   `{"UserEmail":"valid@example.com","MonthlyLimit":1000,"Revoked":false,"Rate":"off"}`,
	revokedKey: `{"UserEmail":"revoked@example.com","MonthlyLimit":1000,"Revoked":true}`,
	corruptKey: `{"UserEmail":`,
}

// TestProxies runs auth against a real redis-server and puts real nginx
// and Caddy, configured with the recipes of docker/, and real Traefik,
// configured as compose.yaml configures the gateway, in front of a stand-in
// API. Whatever the front, the client must get the answers of SPEC §2: same
// status, same JSON body, same Retry-After and X-Pesto-Error.
func TestProxies(t *testing.T) {
	nginxBin := lookTool(t, "nginx")
	caddyBin := lookTool(t, "caddy")
	traefikBin := lookTraefik(t)

	redis := redistest.Start(t)
	for k, v := range seeded {
		redis.Do("SET", k, v)
	}
	authBin := buildAuth(t)
	authAddr, stopAuth := startAuth(t, authBin, redis.URL)
	hold := &gate{}
	apiAddr := stubAPI(t, hold)
	registrationAddr := stubUpstream(t, "registration ok")

	fronts := []front{
		{name: "direct", url: "http://" + authAddr},
		{name: "nginx", url: "http://" + startNginx(t, nginxBin, authAddr, apiAddr, registrationAddr), viaProxy: true,
			notFound: jsonNotFound, authDown: jsonAuthDown},
		{name: "caddy", url: "http://" + startCaddy(t, caddyBin, authAddr, apiAddr, registrationAddr), viaProxy: true,
			notFound: jsonNotFound, authDown: jsonAuthDown},
		{name: "traefik", url: "http://" + startTraefik(t, traefikBin, authAddr, apiAddr, registrationAddr), viaProxy: true,
			notFound: traefikAbsent, authDown: jsonAuthDown},
	}
	for i, f := range fronts {
		// One call allowed per month: the first is let through, the second
		// is over quota.
		redis.Do("SET", quotaKey(f), fmt.Sprintf(`{"UserEmail":"quota-%d@example.com","MonthlyLimit":1,"Revoked":false}`, i))
		// Seven of fifty calls used this month.
		redis.Do("SET", usageKey(f), fmt.Sprintf(`{"UserEmail":"usage-%d@example.com","MonthlyLimit":50,"Revoked":false}`, i))
		// Two calls a minute.
		redis.Do("SET", rateKey(f), fmt.Sprintf(`{"UserEmail":"rate-%d@example.com","MonthlyLimit":1000,"Revoked":false,"Rate":"2/m"}`, i))
		redis.Do("SET", wire.CounterKey(time.Now(), fmt.Sprintf("usage-%d@example.com", i)), "7")
	}

	for _, f := range fronts {
		t.Run(f.name, func(t *testing.T) {
			allowed := answer{status: 200}
			if f.viaProxy {
				allowed = answer{status: 200, body: "upstream ok"}
			}
			tests := []struct {
				name  string
				token *string // nil: no header
				want  answer
			}{
				{"valid key", ptr(validKey), allowed},
				{"no token", nil, denied(401, "Token must be supplied")},
				{"empty token", ptr(""), denied(401, "Token must be supplied")},
				{"a byte outside visible ASCII", ptr("k\u00e9y"), denied(401, "Token not registered")},
				{"unknown key", ptr("no-such-key-0000000000000000000000000000000000000000000000000000"), denied(401, "Token not registered")},
				{"key of ours", ptr("waiting-list"), denied(401, "Token not registered")},
				{"revoked key", ptr(revokedKey), denied(401, "Token has been revoked")},
				{"corrupt record", ptr(corruptKey), denied(500, "Internal server error")},
				{"quota, first call", ptr(quotaKey(f)), allowed},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					got := call(t, f, "/api/execute", tt.token)
					tt.want.check(t, got)
				})
			}

			t.Run("quota used up", func(t *testing.T) {
				got := call(t, f, "/api/execute", ptr(quotaKey(f)))
				denied(429, "Monthly limit exceeded").check(t, got)
				assertRetryAfterNextMonth(t, got.header.Get("Retry-After"))
				if got, want := got.header.Get("RateLimit-Limit"), "1"; got != want {
					t.Errorf("RateLimit-Limit = %q, want %q", got, want)
				}
				if got, want := got.header.Get("RateLimit-Remaining"), "0"; got != want {
					t.Errorf("RateLimit-Remaining = %q, want %q", got, want)
				}
				// The default rate beside it, farther from refusing.
				if got, want := got.header.Get("RateLimit-Policy"), `"monthly";q=1;w=`+monthSeconds()+`, "rate";q=10;w=1`; got != want {
					t.Errorf("RateLimit-Policy = %q, want %q", got, want)
				}
				if got := got.header.Get("RateLimit"); !regexp.MustCompile(`^"monthly";r=0;t=[1-9][0-9]*, "rate";r=(9;t=1|10;t=0)$`).MatchString(got) {
					t.Errorf("RateLimit = %q, want \"monthly\";r=0;t=<seconds>, \"rate\";r=<9 or 10>;t=<1 or 0>", got)
				}
			})

			t.Run("key rate", func(t *testing.T) {
				checkKeyRate(t, f)
			})

			if f.viaProxy {
				// On a 200 the API receives the quota headers (Traefik's
				// authResponseHeaders, Caddy's copy_headers, nginx's
				// proxy_set_header).
				t.Run("quota headers reach the API", func(t *testing.T) {
					got := call(t, f, echoRateLimitPath, ptr(validKey))
					want := regexp.MustCompile(`^upstream ok\nRateLimit: "monthly";r=[0-9]+;t=[1-9][0-9]*\n` +
						`RateLimit-Policy: "monthly";q=1000;w=` + monthSeconds() + `\nRateLimit-Limit: 1000\n` +
						`RateLimit-Remaining: [0-9]+\nRateLimit-Reset: [1-9][0-9]*\n$`)
					if got.status != 200 || !want.MatchString(got.body) {
						t.Errorf("got %d %q, want 200 matching %s", got.status, got.body, want)
					}
				})
			}

			t.Run("usage", func(t *testing.T) {
				checkUsage(t, f)
			})

			if f.viaProxy {
				t.Run("routes", func(t *testing.T) {
					checkRoutes(t, f)
				})
			}
		})
	}

	// Admission: each client within its in-flight and rate limits before
	// the hook, at the Traefik gateway and in the nginx recipe (Caddy has
	// none in its standard build: README, Operations).
	for _, f := range fronts {
		if f.name == "traefik" || f.name == "nginx" {
			t.Run(f.name+"/admission", func(t *testing.T) {
				checkAdmission(t, f, hold)
			})
		}
	}

	// Redis down: a fast 500 with Retry-After: 1, never a 200.
	redis.Stop()
	for _, f := range fronts {
		t.Run(f.name+"/redis down", func(t *testing.T) {
			for _, tok := range []string{validKey, "uncached-key-000000000000000000000000000000000000000000000000000"} {
				start := time.Now()
				got := call(t, f, "/api/execute", &tok)
				if took := time.Since(start); took > 1500*time.Millisecond {
					t.Errorf("answered in %v, want within 1s", took)
				}
				want := denied(500, "Internal server error")
				want.retryAfter = "1"
				want.check(t, got)
			}
		})
	}

	// Auth down: every proxy answers the JSON 500 the SDKs read as the server's error, never a 200.
	stopAuth()
	for _, f := range fronts[1:] {
		t.Run(f.name+"/auth down", func(t *testing.T) {
			for _, path := range []string{"/api/execute", "/api/ping"} {
				got := call(t, f, path, ptr(validKey))
				if got.status != f.authDown.status || got.body != f.authDown.body {
					t.Errorf("GET %s: got %d %q, want %d %q", path, got.status, got.body, f.authDown.status, f.authDown.body)
				}
			}
		})
	}
}

func ptr(s string) *string { return &s }

// usageKey is the key whose usage front f shows.
func usageKey(f front) string {
	return "usage-key-" + f.name + strings.Repeat("0", 40)
}

// checkUsage checks GET /api/usage through front f: auth's own answer, as
// is, whatever the proxy, and asking counts no call.
func checkUsage(t *testing.T, f front) {
	reset := wire.NextMonth(time.Now()).Format(time.RFC3339)
	want := answer{status: 200, body: `{"limit":50,"used":7,"remaining":43,"reset":"` + reset +
		`","rate":{"limit":10,"window":1,"remaining":10,"reset":0}}`}
	for i := 0; i < 2; i++ { // asking twice: still 7 used, the rate whole
		got := do(t, "GET", f.url+"/api/usage", ptr(usageKey(f)))
		want.check(t, got)
		if got, want := got.header.Get("RateLimit-Policy"), `"rate";q=10;w=1, "monthly";q=50;w=`+monthSeconds(); got != want {
			t.Errorf("RateLimit-Policy = %q, want %q", got, want)
		}
		if got := got.header.Get("RateLimit"); !regexp.MustCompile(`^"rate";r=10;t=0, "monthly";r=43;t=[1-9][0-9]*$`).MatchString(got) {
			t.Errorf("RateLimit = %q", got)
		}
		if got := got.header.Get("Content-Type"); got != "application/json" {
			t.Errorf("Content-Type = %q", got)
		}
	}
	for _, tt := range []struct {
		token *string
		want  answer
	}{
		{nil, denied(401, "Token must be supplied")},
		{ptr("no-such-key-0000000000000000000000000000000000000000000000000000"), denied(401, "Token not registered")},
		{ptr(revokedKey), denied(401, "Token has been revoked")},
	} {
		tt.want.check(t, do(t, "GET", f.url+"/api/usage", tt.token))
	}
}

// rateKey is the key with a rate of 2 calls a minute that front f spends.
func rateKey(f front) string {
	return "rate-key-" + f.name + strings.Repeat("0", 40)
}

// checkKeyRate spends the rate of rateKey(f), 2 calls a minute, through
// front f: both calls let through with both policies' fields (on the
// client's answer from auth itself; behind a proxy on the request to the
// API), the rate closer to refusing first; the third refused with auth's
// 429 Too many requests (not the month's, nor the admission's: it carries
// the fields and the rate's Retry-After), spending nothing of the month.
func checkKeyRate(t *testing.T, f front) {
	policy := `"rate";q=2;w=60, "monthly";q=1000;w=` + monthSeconds()
	allowed := answer{status: 200}
	if f.viaProxy {
		allowed.body = "upstream ok"
	}
	allowed.check(t, call(t, f, "/api/execute", ptr(rateKey(f))))
	second := call(t, f, echoRateLimitPath, ptr(rateKey(f)))
	fields := `"rate";r=0;t=(59|60), "monthly";r=998;t=[1-9][0-9]*`
	if f.viaProxy {
		want := regexp.MustCompile(`^upstream ok\nRateLimit: ` + fields + `\nRateLimit-Policy: ` + regexp.QuoteMeta(policy) +
			`\nRateLimit-Limit: 1000\nRateLimit-Remaining: 998\nRateLimit-Reset: [1-9][0-9]*\n$`)
		if second.status != 200 || !want.MatchString(second.body) {
			t.Errorf("second call: %d %q, want 200 matching %s", second.status, second.body, want)
		}
	} else {
		if second.status != 200 || second.header.Get("RateLimit-Policy") != policy ||
			!regexp.MustCompile(`^`+fields+`$`).MatchString(second.header.Get("RateLimit")) {
			t.Errorf("second call: %d %v", second.status, second.header)
		}
	}

	got := call(t, f, "/api/execute", ptr(rateKey(f)))
	denied(429, "Too many requests").check(t, got)
	if ra := got.header.Get("Retry-After"); ra != "59" && ra != "60" {
		t.Errorf("Retry-After = %q, want the minute's window: 60 (or 59)", ra)
	}
	if got := got.header.Get("RateLimit-Policy"); got != policy {
		t.Errorf("RateLimit-Policy = %q, want %q", got, policy)
	}
	if got := got.header.Get("RateLimit"); !regexp.MustCompile(`^` + fields + `$`).MatchString(got) {
		t.Errorf("RateLimit = %q, want %s", got, fields)
	}
	if got := got.header.Get("RateLimit-Remaining"); got != "998" {
		t.Errorf("RateLimit-Remaining = %q, want the month's 998", got)
	}
}

// quotaKey is the key with a limit of 1 that front f spends.
func quotaKey(f front) string {
	return "quota-key-" + f.name + strings.Repeat("0", 40)
}

// answer is what the client got, or should get.
type answer struct {
	status int
	body   string
	// retryAfter is the exact Retry-After wanted; "" wants none, except on
	// 429, whose value is checked by assertRetryAfterNextMonth.
	retryAfter string
	header     http.Header
}

// denied is the answer of SPEC §2 for a non-2xx decision.
func denied(status int, message string) answer {
	return answer{status: status, body: `{"message":"` + message + `"}`}
}

func (want answer) check(t *testing.T, got answer) {
	t.Helper()
	if got.status != want.status || got.body != want.body {
		t.Fatalf("got %d %q, want %d %q", got.status, got.body, want.status, want.body)
	}
	if want.status == 200 {
		return
	}
	if got, want := got.header.Get("Content-Type"), "application/json"; got != want {
		t.Errorf("Content-Type = %q, want %q", got, want)
	}
	message := strings.TrimSuffix(strings.TrimPrefix(want.body, `{"message":"`), `"}`)
	if got := got.header.Get("X-Pesto-Error"); got != message {
		t.Errorf("X-Pesto-Error = %q, want %q", got, message)
	}
	if want.status != 429 {
		if got := got.header.Get("Retry-After"); got != want.retryAfter {
			t.Errorf("Retry-After = %q, want %q", got, want.retryAfter)
		}
	}
}

// Admission limits of a client at the gateway (docker/traefik/dynamic.yaml)
// and in the nginx recipe.
const (
	admissionInFlight = 32
	admissionBurst    = 100
	admissionRate     = 50 // a second
)

// tooMany is a client's answer over its admission limits.
var tooMany = answer{status: 429, body: `{"message":"Too many requests"}`}

// checkAdmission holds admissionInFlight requests of one client in the API
// and wants the next refused; then sends more than the burst at once and
// wants the excess refused, none of it reaching auth. Then it waits for the
// client's bucket to fill again, so that the tests after it are let in.
func checkAdmission(t *testing.T, f front, hold *gate) {
	hold.reset()
	defer hold.close()
	var wg sync.WaitGroup
	held := make([]answer, admissionInFlight)
	for i := range admissionInFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			held[i] = call(t, f, holdPath, ptr(validKey))
		}()
	}
	servicetest.Poll(t, 5*time.Second, "the API holding the requests", func() bool {
		return hold.held.Load() == admissionInFlight
	})
	got := call(t, f, "/api/ping", ptr(validKey))
	checkTooMany(t, got)
	hold.close()
	wg.Wait()
	for i, got := range held {
		if got.status != 200 || got.body != "upstream ok" {
			t.Errorf("held request %d: %d %q, want 200 upstream ok", i, got.status, got.body)
		}
	}

	// Twice the burst at once, with a key auth does not know: whatever is
	// admitted is auth's 401, the rest the proxy's 429.
	const n = 2 * admissionBurst
	answers := make([]answer, n)
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = call(t, f, "/api/ping", ptr("no-such-key-0000000000000000000000000000000000000000000000000000"))
		}()
	}
	wg.Wait()
	took := time.Since(start)
	admitted, refused := 0, 0
	for _, got := range answers {
		switch got.status {
		case 401:
			admitted++
		case 429:
			refused++
			checkTooMany(t, got)
		default:
			t.Errorf("got %d %q, want auth's 401 or the proxy's 429", got.status, got.body)
		}
	}
	// At most the burst and what the rate added meanwhile (the held
	// requests and the refused one took their share before).
	if most := admissionBurst + int(took.Seconds()*admissionRate) + 1; admitted > most || refused == 0 {
		t.Errorf("%d admitted, %d refused of %d sent at once in %v, want at most %d admitted", admitted, refused, n, took, most)
	}
	t.Logf("%d admitted, %d refused of %d sent at once (%v)", admitted, refused, n, took.Round(time.Millisecond))

	// The bucket fills again at the rate: a client that waits is let in.
	servicetest.Poll(t, 5*time.Second, "the client admitted again", func() bool {
		return call(t, f, "/api/ping", ptr(validKey)).status == 200
	})
}

// checkTooMany wants the admission's refusal: 429, the JSON the SDKs read
// as rate-limited, Retry-After: 1, X-Pesto-Error.
func checkTooMany(t *testing.T, got answer) {
	t.Helper()
	want := tooMany
	want.check(t, got)
	if got := got.header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After = %q, want 1", got)
	}
}

// assertRetryAfterNextMonth checks that v is the number of seconds to the
// next UTC month, give or take a few seconds of test time.
func assertRetryAfterNextMonth(t *testing.T, v string) {
	t.Helper()
	got, err := strconv.ParseInt(v, 10, 64)
	now := time.Now()
	want := int64(wire.NextMonth(now).Sub(now) / time.Second)
	if err != nil || got < want-10 || got > want+1 {
		t.Errorf("Retry-After = %q, want about %d (seconds to the next UTC month)", v, want)
	}
}

var client = &http.Client{Timeout: 5 * time.Second}

// call sends a GET of path to front f, with X-Pesto-Token when token is not
// nil.
func call(t *testing.T, f front, path string, token *string) answer {
	t.Helper()
	if !f.viaProxy {
		path = "/" // auth answers the hook on /
	}
	return do(t, http.MethodGet, f.url+path, token)
}

func do(t *testing.T, method, url string, token *string) answer {
	t.Helper()
	header := map[string]string{}
	if token != nil {
		header["X-Pesto-Token"] = *token
	}
	return request(t, method, url, "", header)
}

// request sends a request with a JSON body (none when body is empty) and
// the headers.
func request(t *testing.T, method, url, body string, header map[string]string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header[k] = []string{v}
	}
	status, got, h := servicetest.Do(t, client, req)
	return answer{status: status, body: got, header: h}
}

// want fails the test unless a has the status and the exact body.
func (a answer) want(t *testing.T, status int, body string) {
	t.Helper()
	if a.status != status || a.body != body {
		t.Fatalf("got %d %q, want %d %q", a.status, a.body, status, body)
	}
}

// checkRoutes checks what a proxy routes where: every /api/ path to the
// API behind the hook, registration's public routes to registration, and
// never registration's admin routes, /healthz or /metrics.
func checkRoutes(t *testing.T, f front) {
	upstream := answer{status: 200, body: "upstream ok"}
	registration := answer{status: 200, body: "registration ok"}
	tests := []struct {
		method, path string
		token        *string // nil: no header
		want         answer
	}{
		{"GET", "/", nil, registration},
		{"HEAD", "/", nil, answer{status: 200}},
		{"POST", "/api/register", nil, registration},
		{"OPTIONS", "/api/register", nil, registration},
		{"POST", "/api/trial", nil, registration},
		// The API: any /api/ path an SDK calls, behind the hook.
		{"POST", "/api/execute", ptr(validKey), upstream},
		{"GET", "/api/list-runtimes", ptr(validKey), upstream},
		{"GET", "/api/ping", ptr(validKey), upstream},
		{"GET", "/api/some/future/route", ptr(validKey), upstream},
		{"GET", "/api/ping", nil, denied(401, "Token must be supplied")},
		{"GET", "/api/list-runtimes", nil, denied(401, "Token must be supplied")},
		{"GET", "/api/ping", ptr("no-such-key-0000000000000000000000000000000000000000000000000000"), denied(401, "Token not registered")},
		{"GET", "/api/ping", ptr(revokedKey), denied(401, "Token has been revoked")},
		{"GET", "/api/ping", ptr(corruptKey), denied(500, "Internal server error")},
		// Never routed, with or without a key.
		{"GET", "/api/pending", ptr(validKey), f.notFound},
		{"PUT", "/api/approve", ptr(validKey), f.notFound},
		{"PUT", "/api/revoke", ptr(validKey), f.notFound},
		{"PUT", "/api/reject", ptr(validKey), f.notFound},
		{"PUT", "/api/rotate", ptr(validKey), f.notFound},
		{"GET", "/api/approve", nil, f.notFound},
		{"GET", "/api/register/../pending", ptr(validKey), f.notFound},
		{"GET", "/healthz", ptr(validKey), f.notFound},
		{"GET", "/metrics", ptr(validKey), f.notFound},
	}
	for _, tt := range tests {
		got := do(t, tt.method, f.url+tt.path, tt.token)
		if got.status != tt.want.status || got.body != tt.want.body {
			t.Errorf("%s %s: got %d %q, want %d %q", tt.method, tt.path, got.status, got.body, tt.want.status, tt.want.body)
			continue
		}
		if tt.want.status == 401 || tt.want.status == 500 {
			tt.want.check(t, got)
		}
	}
}

// lookTool returns the path of a proxy binary; a missing one fails the
// test, never skips it.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed (apt-get install %s): %v", name, name, err)
	}
	return p
}

// buildAuth builds the auth binary of this workspace.
func buildAuth(t *testing.T) string { return buildCommand(t, "auth") }

// startAuth runs the auth binary on a free port, with env (NAME=value)
// after the variables below, and waits until /healthz answers 200. stop ends
// it (and is also run at cleanup).
func startAuth(t *testing.T, bin, redisURL string, env ...string) (addr string, stop func()) {
	t.Helper()
	addr = "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin)
	// As compose.yaml runs it: the proxy in front is trusted to name the
	// client of /api/usage (each front's test stays well within the rate).
	cmd.Env = []string{"PORT=" + port, "REDIS_URL=" + redisURL, "LOG_LEVEL=warn", "ENVIRONMENT=test",
		"TRUSTED_PROXIES=127.0.0.1", "USAGE_RATE=100/m"}
	cmd.Env = append(cmd.Env, env...)
	stop = startProcess(t, cmd)
	waitFor(t, "auth", func() error {
		res, err := client.Get("http://" + addr + "/healthz")
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			return fmt.Errorf("healthz %d", res.StatusCode)
		}
		return nil
	})
	return addr, stop
}

// echoRateLimitPath is a path where the stand-in API adds to its answer
// the quota headers it received.
const echoRateLimitPath = "/api/echo-ratelimit"

// holdPath is a path where the stand-in API holds each request until its
// gate is opened.
const holdPath = "/api/hold"

// gate holds the stand-in API's requests on holdPath.
type gate struct {
	held atomic.Int32
	mu   sync.Mutex
	open chan struct{}
}

// close lets every held request through, and the next ones at once, until
// reset.
func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

func (g *gate) reset() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = make(chan struct{})
	g.held.Store(0)
}

// stubAPI is the stand-in API: "upstream ok" for every request, the quota
// headers it received on echoRateLimitPath, and requests held by hold on
// holdPath.
func stubAPI(t *testing.T, hold *gate) string {
	t.Helper()
	hold.reset()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == holdPath {
			hold.mu.Lock()
			open := hold.open
			hold.mu.Unlock()
			hold.held.Add(1)
			select {
			case <-open:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "upstream ok")
		if r.URL.Path == echoRateLimitPath {
			for _, h := range []string{"RateLimit", "RateLimit-Policy", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} {
				fmt.Fprintf(w, "\n%s: %s", h, r.Header.Get(h))
			}
			io.WriteString(w, "\n")
		}
	}))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// monthSeconds is the length of the current UTC month in seconds, the w of
// RateLimit-Policy.
func monthSeconds() string {
	now := time.Now().UTC()
	start := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	return strconv.FormatInt(int64(wire.NextMonth(now).Sub(start)/time.Second), 10)
}

// stubUpstream is a stand-in service that answers every request 200 with
// body.
func stubUpstream(t *testing.T, body string) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body)
	}))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// recipe reads a recipe file and replaces each of its addresses, each of
// which must occur exactly as often as stated: a recipe that changes shape
// fails here instead of being tested half.
func recipe(t *testing.T, path string, replacements ...replacement) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, r := range replacements {
		if got := strings.Count(s, r.old); got != r.count {
			t.Fatalf("%s: %q occurs %d times, want %d", path, r.old, got, r.count)
		}
		s = strings.ReplaceAll(s, r.old, r.new)
	}
	return s
}

type replacement struct {
	old, new string
	count    int
}

// startNginx runs nginx as the current user with the recipe, everything it
// writes inside a temporary directory, and returns its address.
func startNginx(t *testing.T, bin, authAddr, apiAddr, registrationAddr string) string {
	t.Helper()
	dir := t.TempDir()
	port := strconv.Itoa(redistest.FreePort(t))
	conf := recipe(t, nginxRecipe,
		replacement{"listen 80;", "listen 127.0.0.1:" + port + ";", 1},
		replacement{"server auth:3000;", "server " + authAddr + ";", 1},
		replacement{"server api:80;", "server " + apiAddr + ";", 1},
		replacement{"server registration:3000;", "server " + registrationAddr + ";", 1},
	)
	writeFile(t, filepath.Join(dir, "pesto.conf"), conf)
	user := ""
	if os.Geteuid() == 0 {
		user = "user root root;" // workers may then use the temp dirs below
	}
	main := fmt.Sprintf(`%s
worker_processes 1;
pid %[2]s/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %[2]s/client_body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    include %[2]s/pesto.conf;
}
`, user, dir)
	writeFile(t, filepath.Join(dir, "nginx.conf"), main)
	if out, err := exec.Command(bin, "-t", "-e", "stderr", "-p", dir, "-c", filepath.Join(dir, "nginx.conf")).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	startProcess(t, exec.Command(bin, "-e", "stderr", "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;"))
	addr := "127.0.0.1:" + port
	waitListening(t, "nginx", addr)
	return addr
}

// startCaddy runs Caddy with the recipe, the admin API off and its storage
// inside a temporary directory, and returns its address.
func startCaddy(t *testing.T, bin, authAddr, apiAddr, registrationAddr string) string {
	t.Helper()
	dir := t.TempDir()
	port := strconv.Itoa(redistest.FreePort(t))
	site := recipe(t, caddyRecipe,
		replacement{"\n:80 {", "\nhttp://127.0.0.1:" + port + " {", 1},
		replacement{"forward_auth auth:3000 {", "forward_auth " + authAddr + " {", 1},
		replacement{"reverse_proxy auth:3000", "reverse_proxy " + authAddr, 1},
		replacement{"reverse_proxy api:80", "reverse_proxy " + apiAddr, 1},
		replacement{"reverse_proxy registration:3000", "reverse_proxy " + registrationAddr, 1},
	)
	writeFile(t, filepath.Join(dir, "pesto.caddyfile"), site)
	main := fmt.Sprintf(`{
	admin off
	auto_https off
	storage file_system %[1]s/data
}
import %[1]s/pesto.caddyfile
`, dir)
	conf := filepath.Join(dir, "Caddyfile")
	writeFile(t, conf, main)
	cmd := exec.Command(bin, "run", "--config", conf, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	startProcess(t, cmd)
	addr := "127.0.0.1:" + port
	waitListening(t, "caddy", addr)
	return addr
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startProcess starts cmd with its output kept for the test log, and stops
// it at cleanup. The returned stop may be called earlier; it is idempotent.
func startProcess(t *testing.T, cmd *exec.Cmd) (stop func()) {
	t.Helper()
	var out servicetest.LogBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(cmd.Path), out.String())
		}
	})
	return stop
}

// waitFor polls ready until it returns nil, for at most 10 s.
func waitFor(t *testing.T, what string, ready func() error) {
	t.Helper()
	var err error
	defer func() {
		if t.Failed() {
			t.Logf("%s: last error: %v", what, err)
		}
	}()
	servicetest.Poll(t, 10*time.Second, what+" ready", func() bool {
		err = ready()
		return err == nil
	})
}

func waitListening(t *testing.T, what, addr string) {
	t.Helper()
	waitFor(t, what, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// traefikCache is where deploy/e2e/tools.sh puts the Traefik it builds
// (PESTO_E2E_CACHE overrides its parent, as for the script).
func traefikCache() string {
	dir := os.Getenv("PESTO_E2E_CACHE")
	if dir == "" {
		dir = "/var/cache/pesto-e2e"
	}
	return filepath.Join(dir, "bin", "traefik")
}

// lookTraefik returns a Traefik of the release line compose.yaml pins for
// the gateway: $PESTO_TRAEFIK, the one deploy/e2e/tools.sh builds, or
// traefik on PATH. None, or another line, fails the test.
func lookTraefik(t *testing.T) string {
	t.Helper()
	image := service(t, loadCompose(t, nil), "gateway").Image
	line, ok := strings.CutPrefix(image, "traefik:")
	if !ok {
		t.Fatalf("gateway image %q is not traefik:<version>", image)
	}
	bin := os.Getenv("PESTO_TRAEFIK")
	if bin == "" {
		bin = traefikCache()
		if _, err := os.Stat(bin); err != nil {
			if p, err := exec.LookPath("traefik"); err == nil {
				bin = p
			}
		}
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("traefik %s is not installed (deploy/e2e/tools.sh builds it into %s): %v\n%s",
			line, traefikCache(), err, out)
	}
	version := regexp.MustCompile(`(?m)^Version:\s+(\S+)`).FindSubmatch(out)
	if version == nil || !strings.HasPrefix(string(version[1])+".", line+".") {
		t.Fatalf("%s is Traefik %q, want the line compose.yaml pins (%s)\n%s", bin, version, line, out)
	}
	return bin
}

// startTraefik runs Traefik as compose.yaml runs the gateway: its command
// line and its dynamic configuration (docker/traefik/dynamic.yaml), with
// only the addresses moved to this machine. It returns its address once
// the routes are loaded.
func startTraefik(t *testing.T, bin, authAddr, apiAddr, registrationAddr string) string {
	t.Helper()
	p := loadCompose(t, nil)
	gw := service(t, p, "gateway")
	// The gateway's files where compose puts them, under dir, which is
	// Traefik's working directory here as / is in the container (local
	// plugins are read from ./plugins-local); the dynamic configuration
	// with this machine's addresses.
	dir := t.TempDir()
	const dynamicTarget = "/etc/traefik/dynamic.yaml"
	for _, c := range gw.Configs {
		cfg := p.Configs[c.Source]
		if cfg.File == "" {
			t.Fatalf("config %s is not a file", c.Source)
		}
		var content string
		if c.Target == dynamicTarget {
			content = recipe(t, cfg.File,
				replacement{"address: http://auth:3000/", "address: http://" + authAddr + "/", 1},
				replacement{"url: http://auth:3000", "url: http://" + authAddr, 1},
				replacement{"url: http://api:80", "url: http://" + apiAddr, 1},
				replacement{"url: http://registration:3000", "url: http://" + registrationAddr, 1},
			)
		} else {
			b, err := os.ReadFile(cfg.File)
			if err != nil {
				t.Fatal(err)
			}
			content = string(b)
		}
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(c.Target)), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, c.Target), content)
	}

	port := strconv.Itoa(redistest.FreePort(t))
	pingPort := strconv.Itoa(redistest.FreePort(t))
	args := []string{"--entrypoints.traefik.address=127.0.0.1:" + pingPort}
	moved := map[string]string{
		"--entrypoints.web.address=:80":              "--entrypoints.web.address=127.0.0.1:" + port,
		"--providers.file.filename=" + dynamicTarget: "--providers.file.filename=" + filepath.Join(dir, dynamicTarget),
	}
	for _, arg := range gw.Command {
		if m, ok := moved[arg]; ok {
			delete(moved, arg)
			arg = m
		}
		args = append(args, arg)
	}
	if len(moved) != 0 {
		t.Fatalf("gateway command %v lacks %v", gw.Command, slices.Collect(maps.Keys(moved)))
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	startProcess(t, cmd)
	addr := "127.0.0.1:" + port
	// The file provider loads the routes after the listener is up: ready
	// once a routed path gets auth's answer.
	waitFor(t, "traefik", func() error {
		res, err := client.Get("http://" + addr + "/api/list-runtimes")
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != 401 {
			return fmt.Errorf("GET /api/list-runtimes: %d, want auth's 401", res.StatusCode)
		}
		return nil
	})
	return addr
}
