// Package address reads email addresses as registration stores and
// compares them: one bare address that net/mail accepts, its domain
// lower-cased and in its ASCII (IDNA) form, nothing that looks like nothing.
package address

import (
	"errors"
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// MaxBytes is the longest address, in bytes (SPEC §3).
const MaxBytes = 254

// Errors of Parse.
var (
	// ErrInvalid: not a single bare address, or one with a character
	// refused.
	ErrInvalid = errors.New("not a single email address without a display name")
	// ErrTooLong: over MaxBytes, as written or with its domain in ASCII.
	ErrTooLong = errors.New("email address over 254 bytes")
)

// Parse returns the address in the form it is compared and stored in
// when it is a single address that net/mail accepts, written as a bare
// address (no display name, no angle brackets, no comment) of at most 254
// bytes: trimmed, its domain lower-cased and in its ASCII (IDNA) form, the
// local part as written. Characters that look like nothing are refused, so
// that two addresses that look the same are the same: control and format
// characters (Unicode Cc, Cf: zero-width, bidi controls…) and every space
// but the ASCII one (which net/mail refuses inside an address anyway).
func Parse(v string) (string, error) {
	if strings.IndexFunc(v, invisible) >= 0 {
		return "", ErrInvalid
	}
	v = strings.TrimSpace(v)
	if len(v) > MaxBytes {
		return "", ErrTooLong
	}
	if v == "" || !utf8.ValidString(v) || strings.ContainsAny(v, "<>()\",;") {
		return "", ErrInvalid
	}
	a, err := mail.ParseAddress(v)
	if err != nil || a.Name != "" || a.Address != v {
		return "", ErrInvalid
	}
	at := strings.LastIndexByte(v, '@')
	domain, err := idna.Lookup.ToASCII(strings.ToLower(v[at+1:]))
	if err != nil || domain == "" {
		return "", ErrInvalid
	}
	v = v[:at+1] + domain
	if len(v) > MaxBytes {
		return "", ErrTooLong
	}
	return v, nil
}

// invisible reports whether r is refused anywhere in an email: a control
// or format character, or a space other than ASCII's (leading and trailing
// ASCII white space is trimmed before).
func invisible(r rune) bool {
	switch {
	case r < utf8.RuneSelf:
		return r < 0x20 && !unicode.IsSpace(r) || r == 0x7f
	case unicode.IsControl(r), unicode.Is(unicode.Cf, r), unicode.IsSpace(r), unicode.Is(unicode.Zs, r):
		return true
	}
	return false
}
