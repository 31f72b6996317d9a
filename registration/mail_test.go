package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io"
	"math/big"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	netmail "net/mail"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	texttemplate "text/template"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"pesto/shared/config"
	"pesto/shared/redistest"
	"pesto/shared/servicetest"
)

// testSMTP is a real SMTP server (emersion/go-smtp) on a loopback port that
// records every message it accepts. It can be stopped and started again on
// the same port, offer STARTTLS or implicit TLS, require AUTH, and refuse
// every message with a reply code.
type testSMTP struct {
	t        testing.TB
	Port     int
	Addr     string
	tlsConf  *tls.Config // server side; nil: no STARTTLS
	implicit bool        // TLS from the first byte (smtps)
	user     string      // "" accepts no AUTH
	pass     string
	roots    *x509.CertPool

	mu       sync.Mutex
	srv      *smtp.Server
	received []receivedMail
	reject   int    // reply code for RCPT, 0 accepts
	rejectTo string // when set, only this recipient is refused
	refused  int    // messages refused
}

type receivedMail struct {
	From, To string
	Data     []byte
	TLS      bool
	AuthUser string
}

type smtpOption func(*testSMTP)

// withTLS gives the server a certificate for 127.0.0.1 from a CA made for
// the test; implicit serves TLS from the first byte, else STARTTLS.
func withTLS(implicit bool) smtpOption {
	return func(s *testSMTP) {
		s.tlsConf, s.roots = testCert(s.t)
		s.implicit = implicit
	}
}

func withAuth(user, pass string) smtpOption {
	return func(s *testSMTP) { s.user, s.pass = user, pass }
}

// newTestSMTP reserves a port and returns the server, not yet started.
func newTestSMTP(t testing.TB, opts ...smtpOption) *testSMTP {
	t.Helper()
	s := &testSMTP{t: t, Port: redistest.FreePort(t)}
	s.Addr = "127.0.0.1:" + strconv.Itoa(s.Port)
	for _, o := range opts {
		o(s)
	}
	t.Cleanup(s.Stop)
	return s
}

// startTestSMTP starts a server at once.
func startTestSMTP(t testing.TB, opts ...smtpOption) *testSMTP {
	t.Helper()
	s := newTestSMTP(t, opts...)
	s.Start()
	return s
}

// Start listens on the server's port and serves until Stop.
func (s *testSMTP) Start() {
	s.t.Helper()
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		s.t.Fatalf("smtp listen %s: %v", s.Addr, err)
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &testSession{s: s, c: c}, nil
	}))
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.AllowInsecureAuth = s.tlsConf == nil
	if s.tlsConf != nil {
		srv.TLSConfig = s.tlsConf
		if s.implicit {
			ln = tls.NewListener(ln, s.tlsConf)
		}
	}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// Stop closes the server; Start may start it again.
func (s *testSMTP) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// Reject makes the server refuse every recipient with code (0 accepts).
func (s *testSMTP) Reject(code int) { s.RejectOnly("", code) }

// RejectOnly makes the server refuse the recipient to with code; to ""
// refuses every recipient.
func (s *testSMTP) RejectOnly(to string, code int) {
	s.mu.Lock()
	s.reject, s.rejectTo = code, to
	s.mu.Unlock()
}

// Received returns a copy of the messages accepted so far.
func (s *testSMTP) Received() []receivedMail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]receivedMail(nil), s.received...)
}

// Refused returns how many recipients were refused.
func (s *testSMTP) Refused() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

// waitReceived polls until n messages arrived, failing the test after d.
func (s *testSMTP) waitReceived(t testing.TB, n int, d time.Duration) []receivedMail {
	t.Helper()
	var got []receivedMail
	servicetest.Poll(t, d, fmt.Sprintf("the SMTP server receives %d messages", n), func() bool {
		got = s.Received()
		return len(got) >= n
	})
	return got
}

// url returns the SMTP_URL of this server, credentials percent-encoded,
// with the given query (tls=...).
func (s *testSMTP) url(query string) string {
	u := url.URL{Scheme: "smtp", Host: s.Addr, RawQuery: query}
	if s.implicit {
		u.Scheme = "smtps"
	}
	if s.user != "" {
		u.User = url.UserPassword(s.user, s.pass)
	}
	return u.String()
}

// clientTLS is what the mailer needs to trust the server's certificate.
func (s *testSMTP) clientTLS() *tls.Config {
	if s.roots == nil {
		return nil
	}
	return &tls.Config{RootCAs: s.roots, MinVersion: tls.VersionTLS12}
}

type testSession struct {
	s        *testSMTP
	c        *smtp.Conn
	from, to string
	authUser string
}

func (ss *testSession) AuthMechanisms() []string {
	if ss.s.user == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *testSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != ss.s.user || password != ss.s.pass {
			return errors.New("invalid credentials")
		}
		ss.authUser = username
		return nil
	}), nil
}

func (ss *testSession) Mail(from string, _ *smtp.MailOptions) error {
	if ss.s.user != "" && ss.authUser == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	ss.from = from
	return nil
}

func (ss *testSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.s.mu.Lock()
	code := ss.s.reject
	if ss.s.rejectTo != "" && to != ss.s.rejectTo {
		code = 0
	}
	if code != 0 {
		ss.s.refused++
	}
	ss.s.mu.Unlock()
	if code != 0 {
		return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{code / 100, 1, 1}, Message: "Mailbox unavailable"}
	}
	ss.to = to
	return nil
}

func (ss *testSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	_, isTLS := ss.c.TLSConnectionState()
	ss.s.mu.Lock()
	ss.s.received = append(ss.s.received, receivedMail{From: ss.from, To: ss.to, Data: data, TLS: isTLS, AuthUser: ss.authUser})
	ss.s.mu.Unlock()
	return nil
}

func (ss *testSession) Reset()        { ss.from, ss.to = "", "" }
func (ss *testSession) Logout() error { return nil }

// testCert makes a CA and a server certificate for 127.0.0.1 signed by it.
func testCert(t testing.TB) (*tls.Config, *x509.CertPool) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pesto test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS12,
	}, pool
}

// parsedMail is a received key email taken apart.
type parsedMail struct {
	Header     netmail.Header
	RawHeader  string // the header block as received
	Text, HTML string
}

// parseMail reads a multipart/alternative message with a text and an HTML
// part, decoding their transfer encoding.
func parseMail(t testing.TB, data []byte) parsedMail {
	t.Helper()
	msg, err := netmail.ReadMessage(strings.NewReader(string(data)))
	if err != nil {
		t.Fatalf("received message does not parse: %v\n%s", err, data)
	}
	p := parsedMail{Header: msg.Header}
	if i := strings.Index(string(data), "\r\n\r\n"); i >= 0 {
		p.RawHeader = string(data[:i+2])
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/alternative" {
		t.Fatalf("Content-Type %q, want multipart/alternative (%v)", msg.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var body io.Reader = part
		if strings.EqualFold(part.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
			body = quotedprintable.NewReader(part)
		}
		b, err := io.ReadAll(body)
		if err != nil {
			t.Fatal(err)
		}
		ct, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
		switch ct {
		case "text/plain":
			p.Text = string(b)
		case "text/html":
			p.HTML = string(b)
		default:
			t.Fatalf("unexpected part %q", ct)
		}
	}
	return p
}

// testMailConfig is the mail config of a test server.
func testMailConfig(t testing.TB, s *testSMTP, query string) mailConfig {
	t.Helper()
	e := config.New(servicetest.Env(map[string]string{"SMTP_URL": s.url(query)}))
	cfg := loadMailConfig(e)
	if err := e.Err(); err != nil {
		t.Fatal(err)
	}
	cfg.TLSConfig = s.clientTLS()
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

func TestSendKeyEmail(t *testing.T) {
	const token = "k3yK3yk3yK3yk3yK3yk3yK3yk3yK3yk3yK3yk3yK3yk3yK3yk3yK3yk3yK3y0123"
	tests := []struct {
		name     string
		opts     []smtpOption
		query    string
		wantTLS  bool
		wantUser string
	}{
		{"starttls mandatory with auth", []smtpOption{withTLS(false), withAuth("me@example.com", "p@ss:w/rd")}, "", true, "me@example.com"},
		{"implicit tls", []smtpOption{withTLS(true)}, "", true, ""},
		{"opportunistic takes starttls", []smtpOption{withTLS(false)}, "tls=opportunistic", true, ""},
		{"opportunistic without starttls", nil, "tls=opportunistic", false, ""},
		{"plaintext", nil, "tls=none", false, ""},
		{"plaintext with auth", []smtpOption{withAuth("dev", "dev")}, "tls=none", false, "dev"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startTestSMTP(t, tt.opts...)
			cfg := testMailConfig(t, srv, tt.query)
			k := keyEmail{To: "jane@example.com", Name: "Jane", Token: token, Limit: 1000}
			if err := newMailer(cfg).Send(context.Background(), k); err != nil {
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
			m := parseMail(t, got[0].Data)
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
	srv := startTestSMTP(t)
	m := newMailer(testMailConfig(t, srv, "tls=none"))
	k := keyEmail{To: "x@example.com", Name: "<b>x</b> & <script>alert(1)</script>", Token: "tok", Limit: 5}
	if err := m.Send(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	got := parseMail(t, srv.waitReceived(t, 1, time.Second)[0].Data)
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
	srv := startTestSMTP(t)
	m := newMailer(testMailConfig(t, srv, "tls=none"))
	names := []string{
		"Eve\r\nBcc: victim@example.com",
		"Eve\nBcc: victim@example.com",
		"Eve\rBcc: victim@example.com",
		"Eve\r\n\r\nInjected body",
	}
	for i, name := range names {
		if err := m.Send(context.Background(), keyEmail{To: "eve@example.com", Name: name, Token: "tok", Limit: 1}); err != nil {
			t.Fatalf("Send(%q): %v", name, err)
		}
		got := srv.waitReceived(t, i+1, time.Second)[i]
		if got.To != "eve@example.com" {
			t.Errorf("%q: envelope recipient %q", name, got.To)
		}
		p := parseMail(t, got.Data)
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
		err := m.Send(context.Background(), keyEmail{To: to, Name: "Eve", Token: "tok", Limit: 1})
		var invalid *invalidEmailError
		if !errors.As(err, &invalid) {
			t.Errorf("Send to %q: err %v, want an invalidEmailError", to, err)
		}
	}
	if n := len(srv.Received()); n != len(names) {
		t.Errorf("received %d messages, want %d", n, len(names))
	}
}

func TestSendErrorKinds(t *testing.T) {
	k := keyEmail{To: "jane@example.com", Name: "Jane", Token: "tok", Limit: 1}

	t.Run("refused recipient is a rejection", func(t *testing.T) {
		srv := startTestSMTP(t)
		srv.Reject(550)
		err := newMailer(testMailConfig(t, srv, "tls=none")).Send(context.Background(), k)
		var rejected *rejectedError
		if !errors.As(err, &rejected) || rejected.Code != 550 {
			t.Fatalf("err = %v, want a rejectedError with code 550", err)
		}
	})
	t.Run("temporary refusal is a rejection", func(t *testing.T) {
		srv := startTestSMTP(t)
		srv.Reject(451)
		err := newMailer(testMailConfig(t, srv, "tls=none")).Send(context.Background(), k)
		var rejected *rejectedError
		if !errors.As(err, &rejected) || rejected.Code != 451 {
			t.Fatalf("err = %v, want a rejectedError with code 451", err)
		}
	})
	notReached := []struct {
		name  string
		setup func(t *testing.T) (mailConfig, *testSMTP)
	}{
		{"server down", func(t *testing.T) (mailConfig, *testSMTP) {
			srv := newTestSMTP(t) // never started
			return testMailConfig(t, srv, "tls=none"), srv
		}},
		{"mandatory starttls not offered", func(t *testing.T) (mailConfig, *testSMTP) {
			srv := startTestSMTP(t) // no TLS
			return testMailConfig(t, srv, ""), srv
		}},
		{"untrusted certificate", func(t *testing.T) (mailConfig, *testSMTP) {
			srv := startTestSMTP(t, withTLS(false))
			cfg := testMailConfig(t, srv, "")
			cfg.TLSConfig = nil // system roots do not know the test CA
			return cfg, srv
		}},
		{"wrong password", func(t *testing.T) (mailConfig, *testSMTP) {
			srv := startTestSMTP(t, withTLS(false), withAuth("me", "right"))
			srv.pass = "wrong" // the URL carries the wrong one
			cfg := testMailConfig(t, srv, "")
			srv.pass = "right"
			return cfg, srv
		}},
	}
	for _, tt := range notReached {
		t.Run(tt.name, func(t *testing.T) {
			cfg, srv := tt.setup(t)
			err := newMailer(cfg).Send(context.Background(), k)
			var rejected *rejectedError
			var invalid *invalidEmailError
			if err == nil || errors.As(err, &rejected) || errors.As(err, &invalid) {
				t.Fatalf("err = %v, want an error that counts no attempt", err)
			}
			if n := len(srv.Received()); n != 0 {
				t.Errorf("received %d messages, want 0", n)
			}
		})
	}
}
