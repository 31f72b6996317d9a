package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gofiber/fiber/v3"

	"pesto/shared/cli"
	"pesto/shared/metrics"
	"pesto/shared/redisconn"
	"pesto/shared/redistest"
	"pesto/shared/servicetest"
)

func TestMain(m *testing.M) { servicetest.TestMain(m, main) }

type authInstance struct {
	URL  string
	Port string
	Logs *servicetest.LogBuffer
}

// startAuth runs the whole program (run) on a free port until the test ends.
func startAuth(t *testing.T, env map[string]string) *authInstance {
	t.Helper()
	env = withDefaults(env)
	ctx, cancel := context.WithCancel(context.Background())
	logs := &servicetest.LogBuffer{}
	addrc := make(chan net.Addr, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, nil, servicetest.Env(env), logs, func(a net.Addr) { addrc <- a })
	}()
	var addr net.Addr
	select {
	case addr = <-addrc:
	case err := <-errc:
		cancel()
		t.Fatalf("run: %v\n%s", err, logs)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("auth did not start within 10s")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("run returned %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("run did not return within 15s of cancel")
		}
	})
	port := strconv.Itoa(addr.(*net.TCPAddr).Port)
	return &authInstance{URL: "http://127.0.0.1:" + port, Port: port, Logs: logs}
}

// testEnv is the environment every test instance starts from. GOMAXPROCS
// keeps the test process's own (run would halve it; TestGOMAXPROCS checks
// that). KEY_RATE is off: most tests are of the monthly quota and call a
// key faster than the default rate; the rate's tests set their own.
var testEnv = map[string]string{"PORT": "0", "LOG_LEVEL": "debug", "SHUTDOWN_TIMEOUT": "2s",
	"GOMAXPROCS": strconv.Itoa(runtime.GOMAXPROCS(0)), "KEY_RATE": "off"}

func withDefaults(env map[string]string) map[string]string { return servicetest.Merge(testEnv, env) }

var httpClient = &http.Client{Timeout: 5 * time.Second}

type answer struct {
	Status int
	Body   string
	Header http.Header
}

// call sends the hook request; token "-" sends no header at all.
func call(t testing.TB, method, url, token string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "-" {
		req.Header.Set(headerToken, token)
	}
	status, body, header := servicetest.Do(t, httpClient, req)
	return answer{status, body, header}
}

const validRecord = `{"UserEmail":"jane@example.com","MonthlyLimit":100,"Revoked":false}`

func TestRedisKilledAndBack(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok-ok", validRecord)
	a := startAuth(t, map[string]string{"REDIS_URL": rs.URL})
	if got := call(t, "GET", a.URL, "tok-ok"); got.Status != 200 {
		t.Fatalf("before: %+v", got)
	}

	rs.Stop()
	for _, token := range []string{"tok-ok", "tok-unknown"} { // a cached and an uncached key
		start := time.Now()
		got := call(t, "GET", a.URL, token)
		if elapsed := time.Since(start); elapsed > time.Second {
			t.Errorf("%s: answered in %v, want within 1s", token, elapsed)
		}
		if got.Status != 500 || got.Body != `{"message":"Internal server error"}` || got.Header.Get("Retry-After") != "1" {
			t.Errorf("%s with redis down: %+v", token, got)
		}
	}
	if got := call(t, "GET", a.URL+"/healthz", "-"); got.Status != 503 {
		t.Errorf("healthz with redis down: %+v", got)
	}

	rs.Restart()
	rs.Do("SET", "tok-ok", validRecord)
	servicetest.Poll(t, 10*time.Second, "allowed again after redis is back", func() bool {
		return call(t, "GET", a.URL, "tok-ok").Status == 200
	})
	if got := call(t, "GET", a.URL+"/healthz", "-"); got.Status != 200 || got.Body != "OK" {
		t.Errorf("healthz after: %+v", got)
	}
	if got := call(t, "GET", a.URL, "tok-unknown"); got.Status != 401 || got.Body != `{"message":"Token not registered"}` {
		t.Errorf("unknown key after: %+v", got)
	}
}

func TestStartsWhileRedisDown(t *testing.T) {
	rs := redistest.Start(t)
	rs.Stop()
	a := startAuth(t, map[string]string{"REDIS_URL": rs.URL})
	start := time.Now()
	got := call(t, "GET", a.URL, "tok-ok")
	if time.Since(start) > time.Second || got.Status != 500 || got.Body != `{"message":"Internal server error"}` || got.Header.Get("Retry-After") != "1" {
		t.Fatalf("before redis is up: %+v after %v", got, time.Since(start))
	}
	if got := call(t, "GET", a.URL+"/healthz", "-"); got.Status != 503 {
		t.Fatalf("healthz: %+v", got)
	}
	rs.Restart()
	rs.Do("SET", "tok-ok", validRecord)
	servicetest.Poll(t, 10*time.Second, "allowed once redis is up", func() bool {
		return call(t, "GET", a.URL, "tok-ok").Status == 200
	})
	if got := call(t, "GET", a.URL+"/healthz", "-"); got.Status != 200 {
		t.Fatalf("healthz after: %+v", got)
	}
}

// A limit of N allows exactly N calls, whatever the races across replicas.
func TestExactQuotaAcrossInstances(t *testing.T) {
	const limit, calls, workers = 500, 2000, 64
	rs := redistest.Start(t)
	rs.Do("SET", "tok-quota", `{"UserEmail":"quota@example.com","MonthlyLimit":500,"Revoked":false}`)
	env := map[string]string{"REDIS_URL": rs.URL, "LOG_LEVEL": "warn"}
	instances := []*authInstance{startAuth(t, env), startAuth(t, env)}

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	var mu sync.Mutex
	statuses := map[int]int{}
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				req, _ := http.NewRequest("GET", instances[i%2].URL, nil)
				req.Header.Set(headerToken, "tok-quota")
				res, err := client.Do(req)
				status := -1
				if err == nil {
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					status = res.StatusCode
				}
				mu.Lock()
				statuses[status]++
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < calls; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()

	if statuses[200] != limit || statuses[429] != calls-limit || len(statuses) != 2 {
		t.Fatalf("statuses %v, want %d×200 and %d×429", statuses, limit, calls-limit)
	}
	key := "counter/" + time.Now().UTC().Format("2006-01") + "/quota@example.com"
	if got := rs.Do("GET", key); got != "500" {
		t.Fatalf("counter = %q, want 500", got)
	}
	if ttl, _ := strconv.Atoi(rs.Do("TTL", key)); ttl < 3456000-60 || ttl > 3456000 {
		t.Fatalf("counter TTL = %d, want 3456000", ttl)
	}
}

// A record rewritten by anyone (a legacy registration, redis-cli) takes
// effect at once through the client-side cache.
func TestCacheInvalidation(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok-cached", validRecord)
	a := startAuth(t, map[string]string{"REDIS_URL": rs.URL, "TOKEN_CACHE_TTL": "1h"})
	for i := 0; i < 5; i++ {
		if got := call(t, "GET", a.URL, "tok-cached"); got.Status != 200 {
			t.Fatalf("warm-up: %+v", got)
		}
	}
	if hits := metricValue(t, a.URL, `pesto_auth_token_cache_total{result="hit"}`); hits < 4 {
		t.Fatalf("cache hits = %d after 5 calls, want >= 4", hits)
	}

	rs.Do("SET", "tok-cached", `{"UserEmail":"jane@example.com","MonthlyLimit":100,"Revoked":true}`)
	n := 0
	servicetest.Poll(t, time.Second, "revocation seen through the cache", func() bool {
		n++
		return call(t, "GET", a.URL, "tok-cached").Body == `{"message":"Token has been revoked"}`
	})
	t.Logf("revocation seen on call %d after the write", n)

	// An unknown key is cached as missing; its creation is seen too.
	if got := call(t, "GET", a.URL, "tok-new"); got.Status != 401 {
		t.Fatalf("unknown: %+v", got)
	}
	rs.Do("SET", "tok-new", validRecord)
	servicetest.Poll(t, time.Second, "new key seen through the cache", func() bool {
		return call(t, "GET", a.URL, "tok-new").Status == 200
	})
	rs.Do("DEL", "tok-new")
	servicetest.Poll(t, time.Second, "deleted key seen through the cache", func() bool {
		return call(t, "GET", a.URL, "tok-new").Status == 401
	})
}

func TestCacheOff(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok", validRecord)
	a := startAuth(t, map[string]string{"REDIS_URL": rs.URL, "TOKEN_CACHE_TTL": "0"})
	for i := 0; i < 3; i++ {
		if got := call(t, "GET", a.URL, "tok"); got.Status != 200 {
			t.Fatalf("call %d: %+v", i, got)
		}
	}
	if hits := metricValue(t, a.URL, `pesto_auth_token_cache_total{result="hit"}`); hits != 0 {
		t.Fatalf("cache hits = %d with the cache off", hits)
	}
}

func metricValue(t *testing.T, base, series string) int {
	t.Helper()
	got := call(t, "GET", base+"/metrics", "-")
	for _, line := range strings.Split(got.Body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("%s: %q", series, v)
			}
			return n
		}
	}
	t.Fatalf("no %s in /metrics:\n%s", series, got.Body)
	return 0
}

func TestMetricsAndHealthz(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok", validRecord)
	a := startAuth(t, map[string]string{"REDIS_URL": rs.URL})
	call(t, "GET", a.URL, "tok")
	call(t, "GET", a.URL, "tok")
	call(t, "GET", a.URL, "-")
	call(t, "GET", a.URL, "nope")
	for series, want := range map[string]int{
		`pesto_auth_decisions_total{outcome="allowed"}`:        2,
		`pesto_auth_decisions_total{outcome="no_token"}`:       1,
		`pesto_auth_decisions_total{outcome="not_registered"}`: 1,
		`pesto_http_requests_total{route="/",status="200"}`:    2,
		`pesto_http_requests_total{route="/",status="401"}`:    2,
	} {
		if got := metricValue(t, a.URL, series); got != want {
			t.Errorf("%s = %d, want %d", series, got, want)
		}
	}
	if got := call(t, "GET", a.URL+"/healthz", "-"); got.Status != 200 || got.Body != "OK" {
		t.Fatalf("healthz: %+v", got)
	}
	if strings.Contains(a.Logs.String(), "/healthz") || strings.Contains(a.Logs.String(), "/metrics") {
		t.Errorf("healthz or metrics logged:\n%s", a.Logs)
	}
}

func TestLogsNeverHoldTheToken(t *testing.T) {
	rs := redistest.Start(t)
	const token = "SECRETTOKEN0123456789abcdefghijklmnopqrstuvwxyz"
	rs.Do("SET", token, "not json")
	a := startAuth(t, map[string]string{"REDIS_URL": rs.URL, "LOG_LEVEL": "debug"})
	if got := call(t, "GET", a.URL, token); got.Status != 500 || got.Header.Get("Retry-After") != "" {
		t.Fatalf("corrupt record: %+v", got)
	}
	rs.Stop()
	call(t, "GET", a.URL, token)
	logs := a.Logs.String()
	if strings.Contains(logs, token[:12]) {
		t.Fatalf("logs hold the token:\n%s", logs)
	}
	if !strings.Contains(logs, `token SECRET…#`) || !strings.Contains(logs, "corrupt record") {
		t.Fatalf("corrupt record not logged with a token hint:\n%s", logs)
	}
}

func TestSubcommands(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, servicetest.Env(nil), &out, nil); err != nil || out.String() != "auth dev\n" {
		t.Fatalf("version: %q, %v", out.String(), err)
	}
	rs := redistest.Start(t)
	a := startAuth(t, map[string]string{"REDIS_URL": rs.URL})
	if err := run(context.Background(), []string{"healthcheck"}, servicetest.Env(map[string]string{"PORT": a.Port}), io.Discard, nil); err != nil {
		t.Fatalf("healthcheck of a healthy service: %v", err)
	}
	rs.Stop()
	err := run(context.Background(), []string{"healthcheck"}, servicetest.Env(map[string]string{"PORT": a.Port}), io.Discard, nil)
	if cli.ExitCode("auth", err, io.Discard) != 1 {
		t.Fatalf("healthcheck with redis down: %v", err)
	}
	free := strconv.Itoa(redistest.FreePort(t))
	err = run(context.Background(), []string{"healthcheck"}, servicetest.Env(map[string]string{"PORT": free}), io.Discard, nil)
	if cli.ExitCode("auth", err, io.Discard) != 1 {
		t.Fatalf("healthcheck of nothing: %v", err)
	}
}

// SIGTERM stops accepting, drains, and exits 0.
func TestSIGTERM(t *testing.T) {
	rs := redistest.Start(t)
	port := strconv.Itoa(redistest.FreePort(t))
	var stdout servicetest.LogBuffer
	cmd := servicetest.MainCommand(map[string]string{"PORT": port, "REDIS_URL": rs.URL})
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	url := "http://127.0.0.1:" + port
	servicetest.Poll(t, 10*time.Second, "auth ready", func() bool {
		res, err := httpClient.Get(url + "/healthz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stdout.String())
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("no exit within 10s of SIGTERM")
	}
	if !strings.Contains(stdout.String(), `"msg":"shutting down"`) {
		t.Fatalf("no shutdown log:\n%s", stdout.String())
	}
}

// newTestApp is the app on a real Redis with a fixed clock, for app.Test.
func newTestApp(t *testing.T, rs *redistest.Server, env map[string]string, now time.Time) (*fiber.App, *countingStore) {
	t.Helper()
	cfg, err := loadConfig(servicetest.Env(withDefaults(servicetest.Merge(map[string]string{"REDIS_URL": rs.URL}, env))))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	rstore := dialStore(t, cfg, log)
	store := &countingStore{tokenStore: rstore}
	return newApp(log, cfg, store, rstore, metrics.NewRegistry(), nil, func() time.Time { return now }), store
}

// countingStore counts the Redis lookups, to prove some answers need none.
type countingStore struct {
	tokenStore
	mu      sync.Mutex
	records int
}

func (s *countingStore) Record(ctx context.Context, token string) (string, bool, error) {
	s.mu.Lock()
	s.records++
	s.mu.Unlock()
	return s.tokenStore.Record(ctx, token)
}

func (s *countingStore) lookups() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.records
}

func testCall(t *testing.T, app *fiber.App, method string, header http.Header) answer {
	t.Helper()
	return appCall(t, app, method, "/", header)
}

// appCall sends a request with header to path through app.Test.
func appCall(t *testing.T, app *fiber.App, method, path string, header http.Header) answer {
	t.Helper()
	req, _ := http.NewRequest(method, path, nil)
	req.Header = header
	res, err := app.Test(req, fiber.TestConfig{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return answer{res.StatusCode, string(body), res.Header}
}

func tokenHeader(token string) http.Header {
	h := http.Header{}
	h.Set(headerToken, token)
	return h
}

// Faults reach Sentry when SENTRY_DSN is set, without the key.
func TestSentryReport(t *testing.T) {
	events := make(chan string, 10)
	sentrySrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		events <- r.URL.Path + "\n" + string(b)
	}))
	defer sentrySrv.Close()
	rs := redistest.Start(t)
	const token = "tok-corrupt-0123456789"
	rs.Do("SET", token, "[]")
	a := startAuth(t, map[string]string{"REDIS_URL": rs.URL, "SENTRY_DSN": strings.Replace(sentrySrv.URL, "http://", "http://key@", 1) + "/7"})
	if got := call(t, "GET", a.URL, token); got.Status != 500 {
		t.Fatal(got)
	}
	rs.Stop()
	call(t, "GET", a.URL, "tok-uncached")
	for _, want := range []string{"internal", "redis_unavailable"} {
		select {
		case ev := <-events:
			if !strings.HasPrefix(ev, "/api/7/envelope/\n") || !strings.Contains(ev, want) || strings.Contains(ev, token[4:]) {
				t.Fatalf("event: %s", ev)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s event", want)
		}
	}
}

// dialStore is the store main makes, on cfg's Redis, closed with the test.
func dialStore(tb testing.TB, cfg authConfig, log *slog.Logger) *redisStore {
	conn := redisconn.Dial(cfg.redisOptions(), log)
	tb.Cleanup(conn.Close)
	counters := redisconn.Dial(cfg.counterOptions(), log)
	tb.Cleanup(counters.Close)
	return newRedisStore(conn, counters, cfg.CacheTTL, cfg.KeyStorage, log)
}

// auth runs on half the CPUs it may use, at least one, unless the
// environment sets GOMAXPROCS.
func TestGOMAXPROCS(t *testing.T) {
	rs := redistest.Start(t)
	prev, prevStart := runtime.GOMAXPROCS(0), startProcs
	t.Cleanup(func() { runtime.GOMAXPROCS(prev); startProcs = prevStart })
	startProcs = 4 // as if the runtime had found 4 CPUs
	for _, tc := range []struct {
		env  string
		want int
	}{
		{"", 2},
		{"3", 3}, // the runtime applied it at start: run leaves it
	} {
		runtime.GOMAXPROCS(4)
		if tc.env != "" {
			runtime.GOMAXPROCS(3)
		}
		startAuth(t, map[string]string{"REDIS_URL": rs.URL, "GOMAXPROCS": tc.env})
		if got := runtime.GOMAXPROCS(0); got != tc.want {
			t.Errorf("GOMAXPROCS=%q with 4 CPUs: %d Ps, want %d", tc.env, got, tc.want)
		}
	}
	for cpus, want := range map[int]int{1: 1, 2: 1, 3: 1, 8: 4} {
		startProcs = cpus
		if got := defaultProcs(); got != want {
			t.Errorf("%d CPUs: %d Ps, want %d", cpus, got, want)
		}
	}
}

// auth collects at GOGC 50 unless the environment sets GOGC.
func TestGCPercent(t *testing.T) {
	rs := redistest.Start(t)
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	startAuth(t, map[string]string{"REDIS_URL": rs.URL})
	if got := debug.SetGCPercent(100); got != gcPercent {
		t.Errorf("GOGC unset: GC percent %d, want %d", got, gcPercent)
	}
	startAuth(t, map[string]string{"REDIS_URL": rs.URL, "GOGC": "100"})
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC=100: GC percent %d, want 100 (the environment's)", got)
	}
}
