package main

import (
	"context"
	"net"
	"net/http"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"pesto/registration/internal/adminjwt"
	"pesto/shared/servicetest"

	"github.com/golang-jwt/jwt/v5"
)

// testAdminSecret is the ADMIN_JWT_SECRET startRegistration sets unless
// env names ADMIN_JWT_SECRET itself.
const testAdminSecret = "test-secret-0123456789-abcdefghij-klmnop"

// testServerSecret is the SERVER_SECRET startRegistration sets unless env
// names SERVER_SECRET itself.
const testServerSecret = "test-server-secret-0123456789-abcdefghij"

// TestMain runs the tests, or main itself in a child that
// servicetest.MainCommand started.
func TestMain(m *testing.M) { servicetest.TestMain(m, main) }

// startRegistration runs the whole service through run() on a free port
// and returns its base URL ("http://127.0.0.1:PORT") and its logs. env is
// the environment; it must name REDIS_URL. Unless env names them, PORT is 0,
// both rate limits are 100000/s per client and 1000000/s in all, SHUTDOWN_TIMEOUT is 2s and
// ADMIN_JWT_SECRET is testAdminSecret (name it with "" to leave the admin
// API unconfigured). The service is stopped, and checked to stop cleanly,
// when the test ends.
func startRegistration(t testing.TB, env map[string]string) (baseURL string, logs *servicetest.LogBuffer) {
	t.Helper()
	if env["REDIS_URL"] == "" {
		t.Fatal("startRegistration: env must name REDIS_URL (start one with redistest.Start)")
	}
	lookup := servicetest.Env(testEnv(env))

	logs = new(servicetest.LogBuffer)
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, lookup, logs, func(a net.Addr) { addr <- a }) }()
	select {
	case a := <-addr:
		baseURL = "http://127.0.0.1:" + strconv.Itoa(a.(*net.TCPAddr).Port)
	case err := <-done:
		cancel()
		t.Fatalf("run returned before listening: %v\nlogs:\n%s", err, logs)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("run did not listen within 10s")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(10 * time.Second):
			var stacks strings.Builder
			_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
			t.Errorf("run did not return within 10s of cancel; goroutines:\n%s", stacks.String())
		}
	})
	return baseURL, logs
}

// testEnv returns env over the defaults of the tests' services: port 0,
// both rate limits 100000/s per client and 1000000/s in all, SHUTDOWN_TIMEOUT 2s, ADMIN_JWT_SECRET
// testAdminSecret, SERVER_SECRET testServerSecret, LOG_LEVEL debug.
func testEnv(env map[string]string) map[string]string {
	return servicetest.Merge(map[string]string{
		"PORT":                 "0",
		"REGISTER_RATE":        "100000/s",
		"TRIAL_RATE":           "100000/s",
		"REGISTER_GLOBAL_RATE": "1000000/s",
		"TRIAL_GLOBAL_RATE":    "1000000/s",
		"SHUTDOWN_TIMEOUT":     "2s",
		"ADMIN_JWT_SECRET":     testAdminSecret,
		"SERVER_SECRET":        testServerSecret,
		"LOG_LEVEL":            "debug",
	}, env)
}

// adminBearer returns an Authorization header value with an HS256 admin
// token for sub, signed with testAdminSecret, valid for an hour.
func adminBearer(t testing.TB, sub string) string {
	t.Helper()
	now := time.Now()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Audience:  jwt.ClaimStrings{adminjwt.Audience},
		Subject:   sub,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
	}).SignedString([]byte(testAdminSecret))
	if err != nil {
		t.Fatal(err)
	}
	return "Bearer " + tok
}

// response is what a test request got back.
type response struct {
	status int
	header http.Header
	body   string
}

var testClient = &http.Client{Timeout: 5 * time.Second}

// send makes one request; headers are name, value pairs. A body with no
// Content-Type header given is sent as application/json.
func send(t testing.TB, method, url, body string, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	status, b, header := servicetest.Do(t, testClient, req)
	return response{status: status, header: header, body: b}
}

// want fails the test unless r has the status and the exact body.
func (r response) want(t testing.TB, status int, body string) {
	t.Helper()
	if r.status != status || r.body != body {
		t.Fatalf("got %d %s\nwant %d %s", r.status, r.body, status, body)
	}
}
