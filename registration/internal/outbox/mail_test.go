package outbox

import (
	"context"
	"errors"
	htmltemplate "html/template"
	"strings"
	"testing"
	texttemplate "text/template"
	"time"

	"pesto/registration/internal/config"
	"pesto/registration/internal/smtptest"
	"pesto/shared/servicetest"
)

// testMailConfig is the mail config of a test server.
func testMailConfig(t testing.TB, s *smtptest.Server, query string) config.Mail {
	t.Helper()
	all, err := config.Load(servicetest.Env(map[string]string{"SMTP_URL": s.URL(query)}))
	if err != nil {
		t.Fatal(err)
	}
	cfg := all.Mail
	cfg.TLSConfig = s.ClientTLS()
	cfg.Timeout = 5 * time.Second
	return cfg
}

// TestKeyTemplatesMatchGoTemplates pins keyTemplate.render to what
// text/template and html/template write for the same files, byte for byte,
// for names and keys that need escaping.
func TestKeyTemplatesMatchGoTemplates(t *testing.T) {
	text := texttemplate.Must(texttemplate.New("text").Parse(keyTextSource))
	html := htmltemplate.Must(htmltemplate.New("html").Parse(keyHTMLSource))
	for _, d := range []keyData{
		{Name: "Jane", Token: "abcDEF0123456789abcDEF0123456789abcDEF0123456789abcDEF0123456789", Limit: 1000},
		{Name: "<b>x</b>", Token: "tok", Limit: 0},
		{Name: `<script>alert("x" + 'y')</script> & co`, Token: `legacy<key>&"'+`, Limit: -1},
		{Name: "{{.Token}} {{.Limit}}", Token: "{{.Name}}", Limit: 9223372036854775807},
		{Name: "nul\x00byte é 中文 😀", Token: "t", Limit: 5},
	} {
		var wantText, wantHTML strings.Builder
		if err := text.Execute(&wantText, d); err != nil {
			t.Fatal(err)
		}
		if err := html.Execute(&wantHTML, d); err != nil {
			t.Fatal(err)
		}
		if got := keyText.render(d); got != wantText.String() {
			t.Errorf("text part for %+v:\n%s\nwant (text/template):\n%s", d, got, wantText.String())
		}
		if got := keyHTML.render(d); got != wantHTML.String() {
			t.Errorf("HTML part for %+v:\n%s\nwant (html/template):\n%s", d, got, wantHTML.String())
		}
	}
}

func TestKeyTemplateRejectsOtherActions(t *testing.T) {
	for _, src := range []string{"{{.Email}}", "{{.Name | printf}}", "{{if .Name}}x{{end}}", "{{ .Name }}"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("mustKeyTemplate(%q) did not panic", src)
				}
			}()
			mustKeyTemplate(src, true)
		}()
	}
}

func TestSendKeyEmail(t *testing.T) {
	const token = "k3yK3yk3yK3yk3yK3yk3yK3yk3yK3yk3yK3yk3yK3yk3yK3yk3yK3yk3yK3y0123"
	tests := []struct {
		name     string
		opts     []smtptest.Option
		query    string
		wantTLS  bool
		wantUser string
	}{
		{"starttls mandatory with auth", []smtptest.Option{smtptest.WithTLS(false), smtptest.WithAuth("me@example.com", "p@ss:w/rd")}, "", true, "me@example.com"},
		{"implicit tls", []smtptest.Option{smtptest.WithTLS(true)}, "", true, ""},
		{"opportunistic takes starttls", []smtptest.Option{smtptest.WithTLS(false)}, "tls=opportunistic", true, ""},
		{"opportunistic without starttls", nil, "tls=opportunistic", false, ""},
		{"plaintext", nil, "tls=none", false, ""},
		{"plaintext with auth", []smtptest.Option{smtptest.WithAuth("dev", "dev")}, "tls=none", false, "dev"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := smtptest.Start(t, tt.opts...)
			cfg := testMailConfig(t, srv, tt.query)
			k := keyEmail{To: "jane@example.com", Name: "Jane", Token: token, Limit: 1000}
			if err := NewMailer(cfg).SendKey(context.Background(), k); err != nil {
				t.Fatalf("Send: %v", err)
			}
			got := srv.Received()
			if len(got) != 1 {
				t.Fatalf("received %d messages, want 1", len(got))
			}
			if got[0].TLS != tt.wantTLS || got[0].AuthUser != tt.wantUser {
				t.Errorf("TLS %v user %q, want %v %q", got[0].TLS, got[0].AuthUser, tt.wantTLS, tt.wantUser)
			}
			if got[0].From != "pesto@teknologiumum.com" || got[0].To != "jane@example.com" {
				t.Errorf("envelope %q -> %q, want pesto@teknologiumum.com -> jane@example.com", got[0].From, got[0].To)
			}
			m := smtptest.ParseMail(t, got[0].Data)
			if s := m.Header.Get("Subject"); s != "Your Pesto API key" {
				t.Errorf("Subject %q", s)
			}
			if f := m.Header.Get("From"); f != `"Pesto" <pesto@teknologiumum.com>` {
				t.Errorf("From %q", f)
			}
			if to := m.Header.Get("To"); to != `"Jane" <jane@example.com>` {
				t.Errorf("To %q", to)
			}
			for part, body := range map[string]string{"text": m.Text, "html": m.HTML} {
				for _, want := range []string{token, "X-Pesto-Token: " + token, "1000 calls per calendar month"} {
					if !strings.Contains(body, want) {
						t.Errorf("%s part lacks %q:\n%s", part, want, body)
					}
				}
			}
		})
	}
}

func TestSendEscapesName(t *testing.T) {
	srv := smtptest.Start(t)
	m := NewMailer(testMailConfig(t, srv, "tls=none"))
	k := keyEmail{To: "x@example.com", Name: "<b>x</b> & <script>alert(1)</script>", Token: "tok", Limit: 5}
	if err := m.SendKey(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	got := smtptest.ParseMail(t, srv.WaitReceived(t, 1, time.Second)[0].Data)
	if !strings.Contains(got.HTML, "&lt;b&gt;x&lt;/b&gt; &amp; &lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("HTML part does not hold the escaped name:\n%s", got.HTML)
	}
	if strings.Contains(got.HTML, "<b>x</b>") || strings.Contains(got.HTML, "<script>") {
		t.Errorf("HTML part holds the raw name:\n%s", got.HTML)
	}
	if !strings.Contains(got.Text, "Hello <b>x</b> & <script>alert(1)</script>,") {
		t.Errorf("text part does not hold the name as typed:\n%s", got.Text)
	}
}

func TestSendHeaderInjection(t *testing.T) {
	srv := smtptest.Start(t)
	m := NewMailer(testMailConfig(t, srv, "tls=none"))
	names := []string{
		"Eve\r\nBcc: victim@example.com",
		"Eve\nBcc: victim@example.com",
		"Eve\rBcc: victim@example.com",
		"Eve\r\n\r\nInjected body",
	}
	for i, name := range names {
		if err := m.SendKey(context.Background(), keyEmail{To: "eve@example.com", Name: name, Token: "tok", Limit: 1}); err != nil {
			t.Fatalf("Send(%q): %v", name, err)
		}
		got := srv.WaitReceived(t, i+1, time.Second)[i]
		if got.To != "eve@example.com" {
			t.Errorf("%q: envelope recipient %q", name, got.To)
		}
		p := smtptest.ParseMail(t, got.Data)
		if v := p.Header.Get("Bcc"); v != "" {
			t.Errorf("%q: a Bcc header arrived: %q", name, v)
		}
		if strings.Contains(p.RawHeader, "\nBcc:") || strings.Contains(p.RawHeader, "\nInjected") {
			t.Errorf("%q: injected line in the header:\n%s", name, p.RawHeader)
		}
		to, err := p.Header.AddressList("To")
		if err != nil || len(to) != 1 || to[0].Address != "eve@example.com" {
			t.Errorf("%q: To %v (%v), want one address eve@example.com", name, to, err)
		}
	}

	// A CR/LF in the address cannot be sent at all: it is an invalid email,
	// not an SMTP failure, and nothing reaches the server.
	for _, to := range []string{"eve@example.com\r\nBcc: victim@example.com", "Eve <eve@example.com>", "eve@example.com, b@example.com", ""} {
		err := m.SendKey(context.Background(), keyEmail{To: to, Name: "Eve", Token: "tok", Limit: 1})
		var invalid *InvalidEmailError
		if !errors.As(err, &invalid) {
			t.Errorf("Send to %q: err %v, want an InvalidEmailError", to, err)
		}
	}
	if n := len(srv.Received()); n != len(names) {
		t.Errorf("received %d messages, want %d", n, len(names))
	}
}

func TestSendErrorKinds(t *testing.T) {
	k := keyEmail{To: "jane@example.com", Name: "Jane", Token: "tok", Limit: 1}

	t.Run("refused recipient is a rejection", func(t *testing.T) {
		srv := smtptest.Start(t)
		srv.Reject(550)
		err := NewMailer(testMailConfig(t, srv, "tls=none")).SendKey(context.Background(), k)
		var rejected *RejectedError
		if !errors.As(err, &rejected) || rejected.Code != 550 {
			t.Fatalf("err = %v, want a RejectedError with code 550", err)
		}
	})
	t.Run("temporary refusal is a rejection", func(t *testing.T) {
		srv := smtptest.Start(t)
		srv.Reject(451)
		err := NewMailer(testMailConfig(t, srv, "tls=none")).SendKey(context.Background(), k)
		var rejected *RejectedError
		if !errors.As(err, &rejected) || rejected.Code != 451 {
			t.Fatalf("err = %v, want a RejectedError with code 451", err)
		}
	})
	notReached := []struct {
		name  string
		setup func(t *testing.T) (config.Mail, *smtptest.Server)
	}{
		{"server down", func(t *testing.T) (config.Mail, *smtptest.Server) {
			srv := smtptest.New(t) // never started
			return testMailConfig(t, srv, "tls=none"), srv
		}},
		{"mandatory starttls not offered", func(t *testing.T) (config.Mail, *smtptest.Server) {
			srv := smtptest.Start(t) // no TLS
			return testMailConfig(t, srv, ""), srv
		}},
		{"untrusted certificate", func(t *testing.T) (config.Mail, *smtptest.Server) {
			srv := smtptest.Start(t, smtptest.WithTLS(false))
			cfg := testMailConfig(t, srv, "")
			cfg.TLSConfig = nil // system roots do not know the test CA
			return cfg, srv
		}},
		{"wrong password", func(t *testing.T) (config.Mail, *smtptest.Server) {
			srv := smtptest.Start(t, smtptest.WithTLS(false), smtptest.WithAuth("me", "right"))
			cfg := testMailConfig(t, srv, "")
			cfg.SMTP.Password = "wrong" // as if the URL carried the wrong one
			return cfg, srv
		}},
	}
	for _, tt := range notReached {
		t.Run(tt.name, func(t *testing.T) {
			cfg, srv := tt.setup(t)
			err := NewMailer(cfg).SendKey(context.Background(), k)
			var rejected *RejectedError
			var invalid *InvalidEmailError
			if err == nil || errors.As(err, &rejected) || errors.As(err, &invalid) {
				t.Fatalf("err = %v, want an error that counts no attempt", err)
			}
			if n := len(srv.Received()); n != 0 {
				t.Errorf("received %d messages, want 0", n)
			}
		})
	}
}
