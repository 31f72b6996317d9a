package main

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"pesto/shared/redistest"
	"pesto/shared/servicetest"
)

// runMain runs the test binary as the registration command (see TestMain)
// and returns its exit code and output.
func runMain(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	cmd := servicetest.MainCommand(env, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

func TestMainExitCodes(t *testing.T) {
	code, _, stderr := runMain(t, map[string]string{"ADMIN_JWT_SECRET": "short"})
	if code != 2 || stderr != "registration: ADMIN_JWT_SECRET: want at least 32 bytes, got 5\n" {
		t.Fatalf("bad config: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runMain(t, nil, "frobnicate")
	if code != 2 || !strings.Contains(stderr, "usage:") {
		t.Fatalf("bad subcommand: exit %d, stderr %q", code, stderr)
	}
	code, stdout, _ := runMain(t, nil, "version")
	if code != 0 || stdout != "registration dev\n" {
		t.Fatalf("version: exit %d, stdout %q", code, stdout)
	}
	code, _, _ = runMain(t, map[string]string{"PORT": "1"}, "healthcheck")
	if code != 1 {
		t.Fatalf("healthcheck of nothing: exit %d, want 1", code)
	}
}

// The healthcheck subcommand answers 0 for a healthy service, 1 when its
// Redis is down.
func TestHealthcheckSubcommand(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	port := base[strings.LastIndexByte(base, ':')+1:]
	if code, _, _ := runMain(t, map[string]string{"PORT": port}, "healthcheck"); code != 0 {
		t.Fatalf("healthy: exit %d", code)
	}
	rs.Stop()
	if code, _, _ := runMain(t, map[string]string{"PORT": port}, "healthcheck"); code != 1 {
		t.Fatalf("redis down: exit %d", code)
	}
}

// Redis down: 500 within a second, /healthz 503; back: works, no restart.
func TestRedisDown(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	auth := []string{"Authorization", adminBearer(t, "alice")}
	send(t, "POST", base+"/api/register", `{"name":"a","email":"a@b.co","calls":1}`).want(t, 201, created)

	rs.Stop()
	const internal = `{"message":"Internal server error"}`
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/api/register", `{"name":"b","email":"b@b.co","calls":1}`},
		{"POST", "/api/trial", ""},
		{"GET", "/api/pending", ""},
		{"PUT", "/api/approve", `{"email":"a@b.co","limit":1}`},
		{"PUT", "/api/revoke", `{"token":"abc"}`},
		{"PUT", "/api/reject", `{"email":"a@b.co"}`},
	} {
		start := time.Now()
		r := send(t, c.method, base+c.path, c.body, auth...)
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s %s took %v", c.method, c.path, d)
		}
		r.want(t, 500, internal)
	}
	if r := send(t, "GET", base+"/healthz", ""); r.status != 503 {
		t.Fatalf("healthz: %d %s", r.status, r.body)
	}
	// Validation still answers without Redis.
	send(t, "POST", base+"/api/register", `{"name":"","email":"b@b.co","calls":1}`).want(t, 400, `{"message":"`+msgName+`"}`)

	rs.Restart()
	servicetest.Poll(t, 10*time.Second, "signups heal after Redis restarts", func() bool {
		return send(t, "POST", base+"/api/register", `{"name":"c","email":"c@b.co","calls":1}`).status == 201
	})
	if r := send(t, "GET", base+"/healthz", ""); r.status != 200 || r.body != "OK" {
		t.Fatalf("healthz: %d %s", r.status, r.body)
	}
}

// A service started while Redis is down comes up and heals.
func TestStartsWithRedisDown(t *testing.T) {
	rs := redistest.Start(t)
	rs.Stop()
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	send(t, "POST", base+"/api/trial", "").want(t, 500, `{"message":"Internal server error"}`)
	if r := send(t, "GET", base+"/healthz", ""); r.status != 503 {
		t.Fatalf("healthz %d", r.status)
	}
	rs.Restart()
	servicetest.Poll(t, 10*time.Second, "trials heal after Redis restarts", func() bool {
		return send(t, "POST", base+"/api/trial", "").status == 200
	})
}
