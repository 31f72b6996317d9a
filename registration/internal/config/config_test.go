package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"testing"

	shared "pesto/shared/config"

	"pesto/shared/servicetest"
)

// Good values in every accepted form load.
func TestConfigAccepts(t *testing.T) {
	pubPEM := publicPEM(t)
	env := map[string]string{
		"TRIAL_EMAIL_DOMAIN":   "trial.example.org",
		"REGISTER_RATE":        "4/m",
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
	cfg, err := Load(servicetest.Env(env))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join([]string{cfg.TrialDomain, cfg.RegisterRate.String(), cfg.TrialRate.String(),
		strings.Trim(strings.Join(strings.Fields(strings.Trim(strings.ReplaceAll(fmtPrefixes(cfg), ",", " "), "[]")), ","), ","),
		strings.Join(cfg.CORSOrigins, ","), string(rune('0' + len(cfg.AdminPublicKey)/8))}, " | ")
	want := "trial.example.org | 4/m | 7/h | 10.0.0.0/8,192.168.1.1/32,::1/128,fd00::/8 | https://pesto.example,http://localhost:5173 | 4"
	if got != want || cfg.MaxBody != 1024 || cfg.WaitingListMax != 500 || cfg.RegisterGlobalRate.String() != "50/m" || cfg.TrialGlobalRate.String() != "1000/h" ||
		fmt.Sprint(cfg.IPv6RatePrefixes) != "[{64 1} {48 10}]" {
		t.Fatalf("got  %s\nwant %s", got, want)
	}

	if cfg.ServerSecretRandom || len(cfg.ServerSecret) != 32 || string(cfg.ServerSecret) == string(cfg.AdminSecret) {
		t.Fatalf("server secret %x (random %v): want one derived from ADMIN_JWT_SECRET, not it", cfg.ServerSecret, cfg.ServerSecretRandom)
	}
	own, err := Load(servicetest.Env(map[string]string{"SERVER_SECRET": strings.Repeat("k", 40), "ADMIN_JWT_SECRET": strings.Repeat("s", 32)}))
	if err != nil || string(own.ServerSecret) != strings.Repeat("k", 40) || own.ServerSecretRandom {
		t.Fatalf("SERVER_SECRET: %q %v", own.ServerSecret, err)
	}

	def, err := Load(func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if def.WaitingListMax != 10000 || def.TrialDomain != "pesto.teknologiumum.com" || def.RegisterRate.String() != "10/h" || def.TrialRate.String() != "5/h" ||
		def.MaxBody != 16384 || def.RegisterGlobalRate.String() != "100/h" || def.TrialGlobalRate.String() != "200/h" ||
		fmt.Sprint(def.IPv6RatePrefixes) != "[{64 1} {56 2} {48 4}]" || def.CORSOrigins != nil || def.TrustedProxies != nil || def.AdminSecret != nil || def.AdminPublicKey != nil ||
		!def.ServerSecretRandom || len(def.ServerSecret) != 32 {
		t.Fatalf("defaults: %+v", def)
	}
}

func fmtPrefixes(c Config) string {
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
		want SMTPServer
	}{
		{"starttls default port", "smtp://mail.example.com", SMTPServer{Host: "mail.example.com", Port: 587, TLS: TLSStartTLS}},
		{"starttls with user", "smtp://user:pass@mail.example.com:2525", SMTPServer{Host: "mail.example.com", Port: 2525, TLS: TLSStartTLS, Username: "user", Password: "pass"}},
		{"implicit tls default port", "smtps://mail.example.com", SMTPServer{Host: "mail.example.com", Port: 465, TLS: TLSImplicit}},
		{"implicit tls with port", "smtps://u@mail.example.com:4650", SMTPServer{Host: "mail.example.com", Port: 4650, TLS: TLSImplicit, Username: "u"}},
		{"opportunistic", "smtp://mail.example.com?tls=opportunistic", SMTPServer{Host: "mail.example.com", Port: 587, TLS: TLSOpportunistic}},
		{"none", "smtp://mailpit:1025?tls=none", SMTPServer{Host: "mailpit", Port: 1025, TLS: TLSNone}},
		{"url-encoded credentials", "smtp://me%40example.com:p%40ss%3Aw%2Frd@mail.example.com", SMTPServer{Host: "mail.example.com", Port: 587, TLS: TLSStartTLS, Username: "me@example.com", Password: "p@ss:w/rd"}},
		{"trailing slash", "smtp://mail.example.com:25/", SMTPServer{Host: "mail.example.com", Port: 25, TLS: TLSStartTLS}},
		{"ipv6", "smtp://[::1]:25", SMTPServer{Host: "::1", Port: 25, TLS: TLSStartTLS}},
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
			e := shared.New(servicetest.Env(tt.env))
			loadMail(e)
			var ce *shared.Error
			if !errors.As(e.Err(), &ce) {
				t.Fatalf("err = %v, want a *shared.Error", e.Err())
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
			e := shared.New(servicetest.Env(tt.env))
			got := loadMail(e)
			if err := e.Err(); err != nil {
				t.Fatal(err)
			}
			if got.From.String() != tt.wantFrom || got.Subject != tt.wantSubject || got.MaxAttempts != tt.wantAttempts {
				t.Errorf("got from %q subject %q attempts %d, want %q %q %d",
					got.From.String(), got.Subject, got.MaxAttempts, tt.wantFrom, tt.wantSubject, tt.wantAttempts)
			}
			if (got.SMTP != nil) != tt.wantSMTP {
				t.Errorf("SMTP configured = %v, want %v", got.SMTP != nil, tt.wantSMTP)
			}
		})
	}
}

// publicPEM returns a new Ed25519 public key in PEM (PKIX).
func publicPEM(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}
