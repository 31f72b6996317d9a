package outbox

import (
	"context"
	_ "embed" // the key email templates
	"errors"
	"fmt"
	netmail "net/mail"
	"strconv"
	"strings"
	"unicode"

	"pesto/registration/internal/config"

	"github.com/wneessen/go-mail"
)

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

// Mailer sends the outbox's emails over SMTP: it is the Sender of a
// registration whose SMTP_URL is set.
type Mailer struct {
	cfg config.Mail
}

// NewMailer returns the mailer of cfg, or nil when SMTP_URL is empty.
func NewMailer(cfg config.Mail) *Mailer {
	if cfg.SMTP == nil {
		return nil
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = config.SMTPTimeout
	}
	if cfg.From == nil {
		cfg.From, _ = netmail.ParseAddress(config.DefaultMailFrom)
	}
	if cfg.Subject == "" {
		cfg.Subject = config.DefaultMailSubject
	}
	return &Mailer{cfg: cfg}
}

// RejectedError: the SMTP server was reached and refused or failed the
// message with a reply code (4xx or 5xx). The outbox counts it as an
// attempt; any other error of Send (server unreachable, TLS or AUTH
// failure, connection lost) is retried without using up attempts.
type RejectedError struct {
	Code int   // the SMTP reply code
	Err  error // the refusal
}

func (e *RejectedError) Error() string { return e.Err.Error() }
func (e *RejectedError) Unwrap() error { return e.Err }

// InvalidEmailError: the queued email itself cannot be sent (its address
// does not parse); retrying cannot help.
type InvalidEmailError struct{ Err error }

func (e *InvalidEmailError) Error() string { return "invalid email: " + e.Err.Error() }
func (e *InvalidEmailError) Unwrap() error { return e.Err }

// SendKey sends one key email, text and HTML parts, with Send's errors.
func (m *Mailer) SendKey(ctx context.Context, k keyEmail) error {
	msg, err := m.message(k)
	if err != nil {
		return err
	}
	return m.sendMsg(ctx, msg)
}

// sendMsg sends msg, with Send's errors (Sender).
func (m *Mailer) sendMsg(ctx context.Context, msg *mail.Msg) error {
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
		return &RejectedError{Code: se.ErrorCode(), Err: err}
	}
	return err
}

func (m *Mailer) clientOptions() []mail.Option {
	s := m.cfg.SMTP
	opts := []mail.Option{mail.WithPort(s.Port), mail.WithTimeout(m.cfg.Timeout)}
	switch s.TLS {
	case config.TLSStartTLS:
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory))
	case config.TLSImplicit:
		opts = append(opts, mail.WithSSL())
	case config.TLSOpportunistic:
		opts = append(opts, mail.WithTLSPolicy(mail.TLSOpportunistic))
	case config.TLSNone:
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
		if s.TLS == config.TLSNone {
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
func (m *Mailer) message(k keyEmail) (*mail.Msg, error) {
	addr, err := netmail.ParseAddress(k.To)
	if err != nil || addr.Name != "" || addr.Address != strings.TrimSpace(k.To) {
		if err == nil {
			err = errors.New("not a bare address")
		}
		return nil, &InvalidEmailError{err}
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
