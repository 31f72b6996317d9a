package main

import (
	"bytes"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"pesto/shared/servicetest"
	"pesto/shared/wire"
)

func TestConfigErrorsExit2(t *testing.T) {
	for _, c := range []struct{ name, value string }{
		{"PORT", "abc"},
		{"PORT", "70000"},
		{"REDIS_URL", "http://localhost:6379"},
		{"REDIS_URL", "redis://user:hunter2@[::1"},
		{"SHUTDOWN_TIMEOUT", "10"},
		{"SHUTDOWN_TIMEOUT", "-1s"},
		{"TOKEN_CACHE_TTL", "soon"},
		{"LOG_LEVEL", "loud"},
		{"UNMETERED_EMAILS", "trial[@x"},
		{"SENTRY_DSN", "not a url"},
		{"USAGE_RATE", "60"},
		{"USAGE_RATE", "0/m"},
		{"USAGE_RATE", "2000/m"}, // 8,000 a minute for a /48: not below the global 6000/m
		{"USAGE_GLOBAL_RATE", "6000"},
		{"IPV6_RATE_PREFIXES", "64:0"},
		{"TRUSTED_PROXIES", "gateway"},
		{"QUOTA_WARNINGS", "80,abc"},
		{"QUOTA_WARNINGS", "0"},
		{"QUOTA_WARNINGS", "101"},
		{"QUOTA_WARNINGS", "80,80"},
		{"QUOTA_WARNINGS", "80,,100"},
		{"KEY_RATE", "10"},
		{"KEY_RATE", "10/h"},
		{"KEY_RATE", "0/s"},
		{"KEY_RATE", "10/s;burst=11"},
	} {
		t.Run(c.name+"="+c.value, func(t *testing.T) {
			var stderr bytes.Buffer
			cmd := servicetest.MainCommand(map[string]string{c.name: c.value})
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Fatalf("exit: %v, stderr %q", err, stderr.String())
			}
			msg := stderr.String()
			if strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "auth: "+c.name+": ") {
				t.Fatalf("stderr = %q, want one line naming %s", msg, c.name)
			}
			if strings.Contains(msg, "hunter2") {
				t.Fatalf("stderr shows the password: %q", msg)
			}
		})
	}
	t.Run("unknown subcommand", func(t *testing.T) {
		err := servicetest.MainCommand(nil, "frobnicate").Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("exit: %v", err)
		}
	})
}

// KEY_RATE: the default rate of a key, 10/s unless set; off: none.
func TestParseKeyRate(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want wire.Rate
	}{
		{nil, wire.Rate{Count: 10, Per: time.Second}},
		{map[string]string{"KEY_RATE": ""}, wire.Rate{Count: 10, Per: time.Second}},
		{map[string]string{"KEY_RATE": " 600/m;burst=100 "}, wire.Rate{Count: 600, Per: time.Minute, Burst: 100}},
		{map[string]string{"KEY_RATE": "off"}, wire.Rate{}},
	} {
		cfg, err := loadConfig(servicetest.Env(c.env))
		if err != nil || cfg.KeyRate != c.want {
			t.Errorf("%v: %+v, %v; want %+v", c.env, cfg.KeyRate, err, c.want)
		}
	}
}

func TestParseQuotaWarnings(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want []int
	}{
		{nil, []int{80, 100}},
		{map[string]string{"QUOTA_WARNINGS": ""}, nil},
		{map[string]string{"QUOTA_WARNINGS": " "}, nil},
		{map[string]string{"QUOTA_WARNINGS": "100, 50,90%"}, []int{50, 90, 100}},
	} {
		cfg, err := loadConfig(servicetest.Env(c.env))
		if err != nil || !slices.Equal(cfg.QuotaWarnings, c.want) {
			t.Errorf("%v: %v, %v; want %v", c.env, cfg.QuotaWarnings, err, c.want)
		}
	}
}
