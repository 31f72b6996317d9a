package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"pesto/shared/cli"
	"pesto/shared/config"
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
		"REGISTER_GLOBAL_RATE": "50/m",
		"TRIAL_GLOBAL_RATE":    "1000/h",
		"IPV6_RATE_PREFIXES":   " 64:1, 48:10",
		"TRUSTED_PROXIES":      " 10.0.0.0/8 ,192.168.1.1, ::1, fd00::/8 ",
		"MAX_BODY_BYTES":       "1024",
		"WAITING_LIST_MAX":     "500",
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
	if got != want || cfg.MaxBody != 1024 || cfg.WaitingListMax != 500 || cfg.RegisterGlobalRate.String() != "50/m" || cfg.TrialGlobalRate.String() != "1000/h" ||
		fmt.Sprint(cfg.IPv6RatePrefixes) != "[{64 1} {48 10}]" {
		t.Fatalf("got  %s\nwant %s", got, want)
	}

	def, err := loadConfig(func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if def.WaitingListMax != 10000 || def.TrialDomain != "pesto.teknologiumum.com" || def.RegisterRate.String() != "10/m" || def.TrialRate.String() != "5/h" ||
		def.MaxBody != 16384 || def.RegisterGlobalRate.String() != "100/h" || def.TrialGlobalRate.String() != "200/h" ||
		fmt.Sprint(def.IPv6RatePrefixes) != "[{64 1} {56 2} {48 4}]" || def.CORSOrigins != nil || def.TrustedProxies != nil || def.AdminSecret != nil || def.AdminPublicKey != nil {
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

func TestParseSMTPURL(t *testing.T) {
	tests := []struct {
		name string
		url  string
		want smtpServer
	}{
		{"starttls default port", "smtp://mail.example.com", smtpServer{Host: "mail.example.com", Port: 587, TLS: tlsStartTLS}},
		{"starttls with user", "smtp://user:pass@mail.example.com:2525", smtpServer{Host: "mail.example.com", Port: 2525, TLS: tlsStartTLS, Username: "user", Password: "pass"}},
		{"implicit tls default port", "smtps://mail.example.com", smtpServer{Host: "mail.example.com", Port: 465, TLS: tlsImplicit}},
		{"implicit tls with port", "smtps://u@mail.example.com:4650", smtpServer{Host: "mail.example.com", Port: 4650, TLS: tlsImplicit, Username: "u"}},
		{"opportunistic", "smtp://mail.example.com?tls=opportunistic", smtpServer{Host: "mail.example.com", Port: 587, TLS: tlsOpportunistic}},
		{"none", "smtp://mailpit:1025?tls=none", smtpServer{Host: "mailpit", Port: 1025, TLS: tlsNone}},
		{"url-encoded credentials", "smtp://me%40example.com:p%40ss%3Aw%2Frd@mail.example.com", smtpServer{Host: "mail.example.com", Port: 587, TLS: tlsStartTLS, Username: "me@example.com", Password: "p@ss:w/rd"}},
		{"trailing slash", "smtp://mail.example.com:25/", smtpServer{Host: "mail.example.com", Port: 25, TLS: tlsStartTLS}},
		{"ipv6", "smtp://[::1]:25", smtpServer{Host: "::1", Port: 25, TLS: tlsStartTLS}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSMTPURL(tt.url)
			if err != nil {
				t.Fatalf("parseSMTPURL(%q): %v", tt.url, err)
			}
			if *got != tt.want {
				t.Errorf("parseSMTPURL(%q) = %+v, want %+v", tt.url, *got, tt.want)
			}
		})
	}
}

func TestLoadMailConfigErrors(t *testing.T) {
	const secret = "s3cretpw"
	tests := []struct {
		name    string
		env     map[string]string
		wantVar string
	}{
		{"http scheme", map[string]string{"SMTP_URL": "http://user:" + secret + "@mail.example.com"}, "SMTP_URL"},
		{"no scheme", map[string]string{"SMTP_URL": "mail.example.com:587"}, "SMTP_URL"},
		{"no host", map[string]string{"SMTP_URL": "smtp://:587"}, "SMTP_URL"},
		{"port zero", map[string]string{"SMTP_URL": "smtp://mail.example.com:0"}, "SMTP_URL"},
		{"port too big", map[string]string{"SMTP_URL": "smtp://user:" + secret + "@mail.example.com:65536"}, "SMTP_URL"},
		{"port not a number", map[string]string{"SMTP_URL": "smtp://mail.example.com:smtp"}, "SMTP_URL"},
		{"empty port", map[string]string{"SMTP_URL": "smtp://mail.example.com:"}, "SMTP_URL"},
		{"unknown tls", map[string]string{"SMTP_URL": "smtp://user:" + secret + "@mail.example.com?tls=maybe"}, "SMTP_URL"},
		{"tls twice", map[string]string{"SMTP_URL": "smtp://mail.example.com?tls=none&tls=none"}, "SMTP_URL"},
		{"tls on smtps", map[string]string{"SMTP_URL": "smtps://mail.example.com?tls=none"}, "SMTP_URL"},
		{"unknown parameter", map[string]string{"SMTP_URL": "smtp://mail.example.com?auth=plain"}, "SMTP_URL"},
		{"path", map[string]string{"SMTP_URL": "smtp://mail.example.com/inbox"}, "SMTP_URL"},
		{"password without user", map[string]string{"SMTP_URL": "smtp://:" + secret + "@mail.example.com"}, "SMTP_URL"},
		{"bad escape", map[string]string{"SMTP_URL": "smtp://user:" + secret + "%zz@mail.example.com"}, "SMTP_URL"},
		{"attempts zero", map[string]string{"MAIL_MAX_ATTEMPTS": "0"}, "MAIL_MAX_ATTEMPTS"},
		{"attempts negative", map[string]string{"MAIL_MAX_ATTEMPTS": "-1"}, "MAIL_MAX_ATTEMPTS"},
		{"attempts too many", map[string]string{"MAIL_MAX_ATTEMPTS": "1001"}, "MAIL_MAX_ATTEMPTS"},
		{"attempts not a number", map[string]string{"MAIL_MAX_ATTEMPTS": "ten"}, "MAIL_MAX_ATTEMPTS"},
		{"from not an address", map[string]string{"MAIL_FROM": "Pesto"}, "MAIL_FROM"},
		{"from with a newline", map[string]string{"MAIL_FROM": "Pesto <a@b.c>\r\nBcc: x@y.z"}, "MAIL_FROM"},
		{"subject with a newline", map[string]string{"MAIL_SUBJECT": "Key\r\nBcc: x@y.z"}, "MAIL_SUBJECT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := config.New(servicetest.Env(tt.env))
			loadMailConfig(e)
			var ce *config.Error
			if !errors.As(e.Err(), &ce) {
				t.Fatalf("err = %v, want a *config.Error", e.Err())
			}
			if ce.Var != tt.wantVar {
				t.Errorf("error names %q, want %q (%v)", ce.Var, tt.wantVar, ce)
			}
			if strings.Contains(ce.Error(), secret) {
				t.Errorf("error %q shows the password", ce.Error())
			}
		})
	}
}

func TestLoadMailConfigDefaults(t *testing.T) {
	tests := []struct {
		name         string
		env          map[string]string
		wantFrom     string
		wantSubject  string
		wantAttempts int
		wantSMTP     bool
	}{
		{"nothing set", nil, `"Pesto" <pesto@teknologiumum.com>`, "Your Pesto API key", 10, false},
		{"empty SMTP_URL", map[string]string{"SMTP_URL": ""}, `"Pesto" <pesto@teknologiumum.com>`, "Your Pesto API key", 10, false},
		{"all set", map[string]string{
			"SMTP_URL": "smtps://mail.example.com", "MAIL_FROM": "keys@example.com",
			"MAIL_SUBJECT": "Ihr Schlüssel", "MAIL_MAX_ATTEMPTS": "3",
		}, "<keys@example.com>", "Ihr Schlüssel", 3, true},
		{"attempts lower bound", map[string]string{"MAIL_MAX_ATTEMPTS": "1"}, `"Pesto" <pesto@teknologiumum.com>`, "Your Pesto API key", 1, false},
		{"attempts upper bound", map[string]string{"MAIL_MAX_ATTEMPTS": "1000"}, `"Pesto" <pesto@teknologiumum.com>`, "Your Pesto API key", 1000, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := config.New(servicetest.Env(tt.env))
			got := loadMailConfig(e)
			if err := e.Err(); err != nil {
				t.Fatal(err)
			}
			if got.From.String() != tt.wantFrom || got.Subject != tt.wantSubject || got.MaxAttempts != tt.wantAttempts {
				t.Errorf("got from %q subject %q attempts %d, want %q %q %d",
					got.From.String(), got.Subject, got.MaxAttempts, tt.wantFrom, tt.wantSubject, tt.wantAttempts)
			}
			if (got.SMTP != nil) != tt.wantSMTP || (newMailer(got) != nil) != tt.wantSMTP {
				t.Errorf("SMTP configured = %v, want %v", got.SMTP != nil, tt.wantSMTP)
			}
		})
	}
}
