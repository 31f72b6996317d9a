package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"pesto/shared/cli"
	"pesto/shared/config"
	"pesto/shared/redistest"
	"pesto/shared/servicetest"
)

// Each bad value stops the program before it serves, naming the variable.
func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, privPath, _, _ := ed25519PEM(t, dir)
	rsaPub := "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAMQ0dmd0Ocs9J3NVfD+VkXqSU7BjnEPt\nIzeYsmPd0GFZtB5K2Eq7S7lhUHzhpnb1UtSyDWsUdtzSbdqTX5lRX0sCAwEAAQ==\n-----END PUBLIC KEY-----\n"
	for _, c := range []struct{ name, value string }{
		{"PORT", "http"},
		{"REDIS_URL", "mysql://x"},
		{"LOG_LEVEL", "loud"},
		{"SHUTDOWN_TIMEOUT", "soon"},
		{"TRIAL_EMAIL_DOMAIN", "bad domain"},
		{"TRIAL_EMAIL_DOMAIN", "a@b"},
		{"REGISTER_RATE", "10"},
		{"REGISTER_RATE", "10/d"},
		{"REGISTER_RATE", "0/m"},
		{"REGISTER_RATE", "x/m"},
		{"TRIAL_RATE", "-1/h"},
		{"TRIAL_RATE", "5/hour"},
		{"TRUSTED_PROXIES", "10.0.0.0/33"},
		{"TRUSTED_PROXIES", "127.0.0.1, proxy.local"},
		{"MAX_BODY_BYTES", "lots"},
		{"MAX_BODY_BYTES", "0"},
		{"CORS_ORIGINS", "example.com"},
		{"CORS_ORIGINS", "https://example.com/path"},
		{"CORS_ORIGINS", "https://a.example, ftp://b.example"},
		{"CORS_ORIGINS", "https://user@example.com"},
		{"ADMIN_JWT_SECRET", "too-short"},
		{"ADMIN_JWT_SECRET", strings.Repeat("x", 31)},
		{"ADMIN_JWT_PUBLIC_KEY", "/no/such/file.pem"},
		{"ADMIN_JWT_PUBLIC_KEY", notPEM},
		{"ADMIN_JWT_PUBLIC_KEY", privPath},
		{"ADMIN_JWT_PUBLIC_KEY", rsaPub},
		{"ADMIN_JWT_PUBLIC_KEY", "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----"},
	} {
		t.Run(c.name+"="+c.value, func(t *testing.T) {
			env := map[string]string{c.name: c.value}
			var out bytes.Buffer
			err := run(context.Background(), nil, servicetest.Env(env), &out, nil)
			var ce *config.Error
			if !errors.As(err, &ce) || ce.Var != c.name {
				t.Fatalf("got %v, want a *config.Error naming %s", err, c.name)
			}
			if cli.ExitCode("registration", err, &out) != 2 || !strings.HasPrefix(out.String(), "registration: "+c.name+": ") || strings.Count(out.String(), "\n") != 1 {
				t.Fatalf("exit line %q", out.String())
			}
		})
	}
}

// Good values in every accepted form load.
func TestConfigAccepts(t *testing.T) {
	_, _, pubPEM, _ := ed25519PEM(t, t.TempDir())
	env := map[string]string{
		"TRIAL_EMAIL_DOMAIN":   "trial.example.org",
		"REGISTER_RATE":        "100/s",
		"TRIAL_RATE":           "7/h",
		"TRUSTED_PROXIES":      " 10.0.0.0/8 ,192.168.1.1, ::1, fd00::/8 ",
		"MAX_BODY_BYTES":       "1024",
		"CORS_ORIGINS":         "https://pesto.example, http://localhost:5173/",
		"ADMIN_JWT_SECRET":     strings.Repeat("s", 32),
		"ADMIN_JWT_PUBLIC_KEY": pubPEM,
	}
	cfg, err := loadConfig(servicetest.Env(env))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join([]string{cfg.TrialDomain, cfg.RegisterRate.String(), cfg.TrialRate.String(),
		strings.Trim(strings.Join(strings.Fields(strings.Trim(strings.ReplaceAll(fmtPrefixes(cfg), ",", " "), "[]")), ","), ","),
		strings.Join(cfg.CORSOrigins, ","), string(rune('0' + len(cfg.AdminPublicKey)/8))}, " | ")
	want := "trial.example.org | 100/s | 7/h | 10.0.0.0/8,192.168.1.1/32,::1/128,fd00::/8 | https://pesto.example,http://localhost:5173 | 4"
	if got != want || cfg.MaxBody != 1024 {
		t.Fatalf("got  %s\nwant %s", got, want)
	}

	def, err := loadConfig(func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if def.TrialDomain != "pesto.teknologiumum.com" || def.RegisterRate.String() != "10/m" || def.TrialRate.String() != "5/h" ||
		def.MaxBody != 16384 || def.CORSOrigins != nil || def.TrustedProxies != nil || def.AdminSecret != nil || def.AdminPublicKey != nil {
		t.Fatalf("defaults: %+v", def)
	}
}

func fmtPrefixes(c regConfig) string {
	var s []string
	for _, p := range c.TrustedProxies {
		s = append(s, p.String())
	}
	return strings.Join(s, ",")
}

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
