package config

import (
	"errors"
	"strings"
	"testing"

	shared "pesto/shared/config"

	"pesto/shared/servicetest"
)

// smtpURLTexts is every fixed text of parseSMTPURL's errors: a "password"
// that is part of them is not a leak.
const smtpURLTexts = "not a URL; want smtp://user:password@host:587 or smtps://user:password@host:465 " +
	"want smtp:// (STARTTLS) or smtps:// (implicit TLS) no host; want smtp://user:password@host:587 " +
	"a path is not allowed a fragment is not allowed port: want a number from 1 to 65535 empty port " +
	"bad query string unknown parameter: only tls= is known tls is given more than once " +
	"smtps:// is always TLS: tls= is only for smtp:// tls=: want opportunistic or none " +
	"a password without a user name scheme \"smtp\" \"smtps\" SMTP_URL: "

// FuzzSMTPURL: SMTP_URL parsing never panics; what it accepts is a usable
// server; what it refuses is an error naming SMTP_URL that never shows the
// password, however the password is written (PASSWORD in raw is replaced by
// it, unescaped, as an operator might paste it).
func FuzzSMTPURL(f *testing.F) {
	for _, s := range [][2]string{
		{"smtp://user:PASSWORD@mail.example.com:587", "s3cret"},
		{"smtps://user:PASSWORD@mail.example.com", "p@ss:w/rd"},
		{"smtp://user:PASSWORD@mail.example.com?tls=none", "hunter2"},
		{"smtp://user:PASSWORD@mail.example.com", "ab#cdef"},
		{"smtp://user:PASSWORD@mail.example.com", "12?tls=maybe"},
		{"smtp://user:PASSWORD@mail.example.com", "99/inbox"},
		{"smtp://user:PASSWORD@mail.example.com", "70000#x"},
		{"smtp://user:PASSWORD@mail.example.com", "25?auth=plain"},
		{"smtp://user:PASSWORD@mail.example.com", "25?tls=pw123"},
		{"smtp://user:PASSWORD@mail.example.com", "pa ss%zz"},
		{"http://user:PASSWORD@mail.example.com", "s3cret"},
		{"smtp://:PASSWORD@mail.example.com", "s3cret"},
		{"smtp://[::1]:PASSWORD", "25"},
		{"PASSWORD", "smtp://x"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, raw, password string) {
		v := strings.Replace(raw, "PASSWORD", password, 1)
		s, err := parseSMTPURL(v)
		e := shared.New(servicetest.Env(map[string]string{"SMTP_URL": v}))
		cfg := loadMail(e)
		if err == nil {
			if s.Host == "" || s.Port < 1 || s.Port > 65535 || s.TLS < TLSStartTLS || s.TLS > TLSNone ||
				(s.Password != "" && s.Username == "") {
				t.Fatalf("accepted %q as %+v", v, *s)
			}
			if strings.TrimSpace(v) == v && (e.Err() != nil || cfg.SMTP == nil || *cfg.SMTP != *s) {
				t.Fatalf("SMTP_URL=%q: config %+v, %v; want %+v", v, cfg.SMTP, e.Err(), *s)
			}
			return
		}
		var ce *shared.Error
		// (The configuration trims the variable first, as it does every one.)
		if v != "" && strings.TrimSpace(v) == v && (!errors.As(e.Err(), &ce) || ce.Var != "SMTP_URL") {
			t.Fatalf("SMTP_URL=%q refused by parseSMTPURL (%v), but the config error is %v", v, err, e.Err())
		}
		// Neither the password nor a piece of it between URL delimiters
		// (an unescaped '#', '?' or '/' in it cuts it there) may show.
		rest := strings.Replace(raw, "PASSWORD", "", 1)
		pieces := strings.FieldsFunc(password, func(r rune) bool { return strings.ContainsRune("#?/@:&=;%+ ", r) })
		for _, p := range append(pieces, password) {
			if len(p) < 3 || strings.Contains(rest, p) || strings.Contains(smtpURLTexts, p) {
				continue // too short, or also written elsewhere: not told apart
			}
			for _, msg := range []string{err.Error(), errorText(e.Err())} {
				if strings.Contains(msg, p) {
					t.Fatalf("SMTP_URL=%q: the error %q shows %q of the password %q", v, msg, p, password)
				}
			}
		}
	})
}

// errorText is err's text, or "" for nil.
func errorText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
