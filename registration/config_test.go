package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"pesto/shared/cli"
	shared "pesto/shared/config"
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
		{"REGISTER_GLOBAL_RATE", "100"},
		{"TRIAL_GLOBAL_RATE", "0/h"},
		// A client (an IPv6 /48 at 4 times the rate) could use up the
		// global cap alone: refused, naming the per-client rate.
		{"REGISTER_RATE", "10/m"},
		{"REGISTER_RATE", "25/h"},
		{"TRIAL_RATE", "50/h"},
		{"IPV6_RATE_PREFIXES", "64"},
		{"IPV6_RATE_PREFIXES", "64:1,64:2"},
		{"IPV6_RATE_PREFIXES", "129:1"},
		{"IPV6_RATE_PREFIXES", "8:1"},
		{"IPV6_RATE_PREFIXES", "64:0"},
		{"IPV6_RATE_PREFIXES", "/64:1"},
		{"TRUSTED_PROXIES", "10.0.0.0/33"},
		{"TRUSTED_PROXIES", "127.0.0.1, proxy.local"},
		{"MAX_BODY_BYTES", "lots"},
		{"MAX_BODY_BYTES", "0"},
		{"WAITING_LIST_MAX", "0"},
		{"WAITING_LIST_MAX", "many"},
		{"WAITING_LIST_MAX", "1000001"},
		{"CORS_ORIGINS", "example.com"},
		{"CORS_ORIGINS", "https://example.com/path"},
		{"CORS_ORIGINS", "https://a.example, ftp://b.example"},
		{"CORS_ORIGINS", "https://user@example.com"},
		{"ADMIN_JWT_SECRET", "too-short"},
		{"ADMIN_JWT_SECRET", strings.Repeat("x", 31)},
		{"SERVER_SECRET", strings.Repeat("x", 31)},
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
			var ce *shared.Error
			if !errors.As(err, &ce) || ce.Var != c.name {
				t.Fatalf("got %v, want a *shared.Error naming %s", err, c.name)
			}
			if cli.ExitCode("registration", err, &out) != 2 || !strings.HasPrefix(out.String(), "registration: "+c.name+": ") || strings.Count(out.String(), "\n") != 1 {
				t.Fatalf("exit line %q", out.String())
			}
		})
	}
}
