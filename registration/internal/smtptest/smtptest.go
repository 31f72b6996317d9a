// Package smtptest runs a real SMTP server (emersion/go-smtp) on a loopback
// port for a test, and takes apart the messages it receives. Only tests
// import it.
package smtptest

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
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"pesto/shared/redistest"
	"pesto/shared/servicetest"
)

// Server is a real SMTP server (emersion/go-smtp) on a loopback port that
// records every message it accepts. It can be stopped and started again on
// the same port, offer STARTTLS or implicit TLS, require AUTH, and refuse
// every message with a reply code.
type Server struct {
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
	received []Mail
	reject   int    // reply code for RCPT, 0 accepts
	rejectTo string // when set, only this recipient is refused
	refused  int    // messages refused
}

// Mail is one message the server accepted.
type Mail struct {
	From, To string
	Data     []byte
	TLS      bool
	AuthUser string
}

// Option sets up a Server.
type Option func(*Server)

// WithTLS gives the server a certificate for 127.0.0.1 from a CA made for
// the test; implicit serves TLS from the first byte, else STARTTLS.
func WithTLS(implicit bool) Option {
	return func(s *Server) {
		s.tlsConf, s.roots = testCert(s.t)
		s.implicit = implicit
	}
}

// WithAuth makes the server require AUTH as user with pass.
func WithAuth(user, pass string) Option {
	return func(s *Server) { s.user, s.pass = user, pass }
}

// New reserves a port and returns the server, not yet started.
func New(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{t: t, Port: redistest.FreePort(t)}
	s.Addr = "127.0.0.1:" + strconv.Itoa(s.Port)
	for _, o := range opts {
		o(s)
	}
	t.Cleanup(s.Stop)
	return s
}

// Start starts a server at once.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := New(t, opts...)
	s.Start()
	return s
}

// Start listens on the server's port and serves until Stop.
func (s *Server) Start() {
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
func (s *Server) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// Reject makes the server refuse every recipient with code (0 accepts).
func (s *Server) Reject(code int) { s.RejectOnly("", code) }

// RejectOnly makes the server refuse the recipient to with code; to ""
// refuses every recipient.
func (s *Server) RejectOnly(to string, code int) {
	s.mu.Lock()
	s.reject, s.rejectTo = code, to
	s.mu.Unlock()
}

// Received returns a copy of the messages accepted so far.
func (s *Server) Received() []Mail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Mail(nil), s.received...)
}

// Refused returns how many recipients were refused.
func (s *Server) Refused() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

// WaitReceived polls until n messages arrived, failing the test after d.
func (s *Server) WaitReceived(t testing.TB, n int, d time.Duration) []Mail {
	t.Helper()
	var got []Mail
	servicetest.Poll(t, d, fmt.Sprintf("the SMTP server receives %d messages", n), func() bool {
		got = s.Received()
		return len(got) >= n
	})
	return got
}

// URL returns the SMTP_URL of this server, credentials percent-encoded,
// with the given query (tls=...).
func (s *Server) URL(query string) string {
	u := url.URL{Scheme: "smtp", Host: s.Addr, RawQuery: query}
	if s.implicit {
		u.Scheme = "smtps"
	}
	if s.user != "" {
		u.User = url.UserPassword(s.user, s.pass)
	}
	return u.String()
}

// ClientTLS is what the mailer needs to trust the server's certificate.
func (s *Server) ClientTLS() *tls.Config {
	if s.roots == nil {
		return nil
	}
	return &tls.Config{RootCAs: s.roots, MinVersion: tls.VersionTLS12}
}

type testSession struct {
	s        *Server
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
	ss.s.received = append(ss.s.received, Mail{From: ss.from, To: ss.to, Data: data, TLS: isTLS, AuthUser: ss.authUser})
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

// Shutdown stops the SMTP server as a restarting mail server does: it
// stops accepting at once and lets the sessions in progress finish. (A
// server that drops a connection after storing a message but before its
// "250" reaches the client makes any SMTP client send it again: SMTP itself
// cannot deliver exactly once across that.)
func (s *Server) Shutdown() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}
}

// ParsedMail is a received key email taken apart.
type ParsedMail struct {
	Header     netmail.Header
	RawHeader  string // the header block as received
	Text, HTML string
}

// ParseMail reads a multipart/alternative message with a text and an HTML
// part, decoding their transfer encoding.
func ParseMail(t testing.TB, data []byte) ParsedMail {
	t.Helper()
	msg, err := netmail.ReadMessage(strings.NewReader(string(data)))
	if err != nil {
		t.Fatalf("received message does not parse: %v\n%s", err, data)
	}
	p := ParsedMail{Header: msg.Header}
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
