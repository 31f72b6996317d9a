package main

import (
	"context"
	"crypto/tls"
	_ "embed" // the key email templates
	"errors"
	"fmt"
	netmail "net/mail"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/wneessen/go-mail"

	"pesto/shared/config"
)

// Defaults of the email variables (SPEC §5).
const (
	defaultMailFrom    = "Pesto <pesto@teknologiumum.com>"
	defaultMailSubject = "Your Pesto API key"
	defaultMaxAttempts = 10
	smtpTimeout        = 10 * time.Second
)

// tlsMode is how the SMTP connection is encrypted.
type tlsMode int

const (
	tlsStartTLS      tlsMode = iota // STARTTLS required (smtp://, the default)
	tlsImplicit                     // TLS from the first byte (smtps://)
	tlsOpportunistic                // STARTTLS when offered (?tls=opportunistic)
	tlsNone                         // plaintext (?tls=none), local development only
)

// smtpServer is a parsed SMTP_URL.
type smtpServer struct {
	Host     string
	Port     int
	TLS      tlsMode
	Username string // "" means no SMTP AUTH
	Password string
}

// mailConfig is the email part of the configuration: SMTP_URL, MAIL_FROM,
// MAIL_SUBJECT, MAIL_MAX_ATTEMPTS.
type mailConfig struct {
	SMTP        *smtpServer // nil when SMTP_URL is empty: emails wait in the outbox
	From        *netmail.Address
	Subject     string
	MaxAttempts int
	// Timeout bounds every SMTP operation (dial, each command, the data).
	Timeout time.Duration
	// TLSConfig, when set, replaces the default TLS settings (system roots,
	// server name from SMTP_URL). Tests use it to trust their own CA.
	TLSConfig *tls.Config
}

// loadMailConfig reads and checks the email variables; a bad one is
// recorded on e (config.Env.Fail) and so exits 2 naming it.
func loadMailConfig(e *config.Env) mailConfig {
	c := mailConfig{
		Subject:     e.String("MAIL_SUBJECT", defaultMailSubject),
		MaxAttempts: int(e.Int("MAIL_MAX_ATTEMPTS", defaultMaxAttempts, 1, 1000)),
		Timeout:     smtpTimeout,
	}
	if v, ok := e.Lookup("SMTP_URL"); ok {
		s, err := parseSMTPURL(v)
		if err != nil {
			e.Fail("SMTP_URL", "%v", err) // never echoes the value: it may hold a password
		}
		c.SMTP = s
	}
	from, err := netmail.ParseAddress(e.String("MAIL_FROM", defaultMailFrom))
	if err != nil {
		e.Fail("MAIL_FROM", "want an address such as %q: %v", defaultMailFrom, err)
		from = &netmail.Address{Address: "pesto@teknologiumum.com"}
	}
	c.From = from
	if strings.IndexFunc(c.Subject, unicode.IsControl) >= 0 {
		e.Fail("MAIL_SUBJECT", "control characters are not allowed")
	}
	return c
}

// parseSMTPURL reads smtp://[user[:password]@]host[:port][?tls=opportunistic|none]
// or smtps://[user[:password]@]host[:port]. Its errors never quote the
// URL, which may hold a password, nor any part of it but the scheme: a
// password pasted unescaped ("pa?ss", "pa#ss") ends up in the port, the
// query or the fragment, so their values are not shown either.
func parseSMTPURL(v string) (*smtpServer, error) {
	u, err := url.Parse(v)
	if err != nil {
		return nil, errors.New("not a URL; want smtp://user:password@host:587 or smtps://user:password@host:465")
	}
	s := &smtpServer{Host: u.Hostname()}
	defaultPort := 587
	switch u.Scheme {
	case "smtp":
		s.TLS = tlsStartTLS
	case "smtps":
		s.TLS, defaultPort = tlsImplicit, 465
	default:
		return nil, errors.New("unknown scheme; want smtp:// (STARTTLS) or smtps:// (implicit TLS)")
	}
	if u.Opaque != "" || s.Host == "" {
		return nil, errors.New("no host; want smtp://user:password@host:587")
	}
	if u.Path != "" && u.Path != "/" {
		return nil, errors.New("a path is not allowed")
	}
	if u.Fragment != "" {
		return nil, errors.New("a fragment is not allowed")
	}
	s.Port = defaultPort
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return nil, errors.New("port: want a number from 1 to 65535")
		}
		s.Port = n
	} else if strings.HasSuffix(u.Host, ":") {
		return nil, errors.New("empty port")
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, errors.New("bad query string")
	}
	for k, vs := range q {
		if k != "tls" {
			return nil, errors.New("unknown parameter: only tls= is known")
		}
		if len(vs) != 1 {
			return nil, errors.New("tls is given more than once")
		}
		switch {
		case vs[0] == "opportunistic" && s.TLS == tlsStartTLS:
			s.TLS = tlsOpportunistic
		case vs[0] == "none" && s.TLS == tlsStartTLS:
			s.TLS = tlsNone
		case s.TLS == tlsImplicit:
			return nil, errors.New("smtps:// is always TLS: tls= is only for smtp://")
		default:
			return nil, errors.New("tls=: want opportunistic or none")
		}
	}
	if u.User != nil {
		// url.Parse has already percent-decoded both.
		s.Username = u.User.Username()
		s.Password, _ = u.User.Password()
		if s.Username == "" {
			return nil, errors.New("a password without a user name")
		}
	}
	return s, nil
}

// The key email's two parts. They are written in Go template syntax but use
// only the fields {{.Name}}, {{.Token}} and {{.Limit}}, and are filled by
// keyTemplate.render rather than by text/template and html/template: those
// call reflect's MethodByName, which makes the linker keep every exported
// method of every type in the binary and more than doubles its size (past
// the 12 MB budget). mail_test.go checks that both parts come out byte for
// byte as text/template and html/template would write them.
var (
	//go:embed mailtmpl/key.txt.tmpl
	keyTextSource string
	//go:embed mailtmpl/key.html.tmpl
	keyHTMLSource string

	keyText = mustKeyTemplate(keyTextSource, false)
	keyHTML = mustKeyTemplate(keyHTMLSource, true)
)

// keyData is what a key email's template may show.
type keyData struct {
	Name, Token string
	Limit       int64
}

// keyTemplate is one part of the key email.
type keyTemplate struct {
	source string
	html   bool // escape each value as html/template does in element text
}

// keyFields are the only actions a key template may hold.
var keyFields = []string{"{{.Name}}", "{{.Token}}", "{{.Limit}}"}

// mustKeyTemplate checks that source holds no action but keyFields, so
// that a template edit cannot silently show a field unescaped or not at all.
func mustKeyTemplate(source string, html bool) keyTemplate {
	rest := source
	for _, f := range keyFields {
		rest = strings.ReplaceAll(rest, f, "")
	}
	if strings.Contains(rest, "{{") || strings.Contains(rest, "}}") {
		panic("mail template: only " + strings.Join(keyFields, ", ") + " may be used")
	}
	return keyTemplate{source: source, html: html}
}

// htmlTextEscaper escapes like html/template in element text (its
// htmlEscaper): the same characters, the same entities.
var htmlTextEscaper = strings.NewReplacer(
	"\x00", "\uFFFD", `"`, "&#34;", "&", "&amp;", "'", "&#39;", "+", "&#43;", "<", "&lt;", ">", "&gt;",
)

// render fills the template in one pass: a value that itself looks like a
// field ("{{.Token}}" as a name) is shown as typed, never expanded.
func (t keyTemplate) render(d keyData) string {
	name, token := d.Name, d.Token
	if t.html {
		name, token = htmlTextEscaper.Replace(name), htmlTextEscaper.Replace(token)
	}
	return strings.NewReplacer(
		"{{.Name}}", name, "{{.Token}}", token, "{{.Limit}}", strconv.FormatInt(d.Limit, 10),
	).Replace(t.source)
}

// mailer sends key emails over SMTP. A nil *mailer (SMTP_URL empty) keeps
// every email in the outbox.
type mailer struct {
	cfg mailConfig
}

// newMailer returns the mailer of cfg, or nil when SMTP_URL is empty.
func newMailer(cfg mailConfig) *mailer {
	if cfg.SMTP == nil {
		return nil
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = smtpTimeout
	}
	if cfg.From == nil {
		cfg.From, _ = netmail.ParseAddress(defaultMailFrom)
	}
	if cfg.Subject == "" {
		cfg.Subject = defaultMailSubject
	}
	return &mailer{cfg: cfg}
}

// rejectedError: the SMTP server was reached and refused or failed the
// message with a reply code (4xx or 5xx). The outbox counts it as an
// attempt; any other error of Send (server unreachable, TLS or AUTH
// failure, connection lost) is retried without using up attempts.
type rejectedError struct {
	Code int
	err  error
}

func (e *rejectedError) Error() string { return e.err.Error() }
func (e *rejectedError) Unwrap() error { return e.err }

// invalidEmailError: the queued email itself cannot be sent (its address
// does not parse); retrying cannot help.
type invalidEmailError struct{ err error }

func (e *invalidEmailError) Error() string { return "invalid email: " + e.err.Error() }
func (e *invalidEmailError) Unwrap() error { return e.err }

// Send sends one key email, text and HTML parts. It returns nil once the
// server has accepted the message, a *rejectedError when the server refused
// it, an *invalidEmailError when k cannot be sent at all, and another error
// when no server could take it.
func (m *mailer) Send(ctx context.Context, k keyEmail) error {
	msg, err := m.message(k)
	if err != nil {
		return err
	}
	client, err := mail.NewClient(m.cfg.SMTP.Host, m.clientOptions()...)
	if err != nil {
		return fmt.Errorf("smtp client: %w", err)
	}
	err = client.DialAndSendWithContext(ctx, msg)
	if err == nil || msg.IsDelivered() {
		// Accepted: a failure after DATA was answered (RSET, QUIT) does
		// not unsend it.
		return nil
	}
	var se *mail.SendError
	if errors.As(err, &se) && se.ErrorCode() >= 400 {
		return &rejectedError{Code: se.ErrorCode(), err: err}
	}
	return err
}

func (m *mailer) clientOptions() []mail.Option {
	s := m.cfg.SMTP
	opts := []mail.Option{mail.WithPort(s.Port), mail.WithTimeout(m.cfg.Timeout)}
	switch s.TLS {
	case tlsStartTLS:
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory))
	case tlsImplicit:
		opts = append(opts, mail.WithSSL())
	case tlsOpportunistic:
		opts = append(opts, mail.WithTLSPolicy(mail.TLSOpportunistic))
	case tlsNone:
		opts = append(opts, mail.WithTLSPolicy(mail.NoTLS))
	}
	if m.cfg.TLSConfig != nil {
		tc := m.cfg.TLSConfig.Clone()
		if tc.ServerName == "" {
			tc.ServerName = s.Host
		}
		opts = append(opts, mail.WithTLSConfig(tc))
	}
	if s.Username != "" {
		auth := mail.SMTPAuthAutoDiscover
		if s.TLS == tlsNone {
			// go-mail refuses PLAIN over plaintext to any host but
			// localhost; with tls=none the operator chose plaintext.
			auth = mail.SMTPAuthPlainNoEnc
		}
		opts = append(opts, mail.WithSMTPAuth(auth), mail.WithUsername(s.Username), mail.WithPassword(s.Password))
	}
	return opts
}

// message builds the email of k. No byte of k can reach a header unencoded:
// the address must parse as a single bare address, and control characters
// in the name are replaced by spaces before net/mail encodes it.
func (m *mailer) message(k keyEmail) (*mail.Msg, error) {
	addr, err := netmail.ParseAddress(k.To)
	if err != nil || addr.Name != "" || addr.Address != strings.TrimSpace(k.To) {
		if err == nil {
			err = errors.New("not a bare address")
		}
		return nil, &invalidEmailError{err}
	}
	name := cleanName(k.Name)
	data := keyData{Name: name, Token: k.Token, Limit: k.Limit}

	msg := mail.NewMsg()
	msg.FromMailAddress(m.cfg.From)
	msg.ToMailAddress(&netmail.Address{Name: name, Address: addr.Address})
	msg.Subject(m.cfg.Subject)
	msg.SetMessageID()
	msg.SetDate()
	msg.SetBodyString(mail.TypeTextPlain, keyText.render(data))
	msg.AddAlternativeString(mail.TypeTextHTML, keyHTML.render(data))
	return msg, nil
}

// cleanName returns name, trimmed, with each control character (CR, LF,
// tab, …) replaced by a space.
func cleanName(name string) string {
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, name))
}
