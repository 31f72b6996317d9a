// Package address reads email addresses as registration stores and
// compares them: one bare address that net/mail accepts, its domain
// lower-cased and in its ASCII (IDNA) form, its local part a PRECIS
// identifier in one script, nothing that looks like nothing; two addresses
// that look alike are stored alike.
package address

import (
	"errors"
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/text/secure/precis"
	"golang.org/x/text/unicode/norm"
)

// MaxBytes is the longest address, in bytes (SPEC §3).
const MaxBytes = 254

// Errors of Parse.
var (
	// ErrInvalid: not a single bare address, or one with a control,
	// format or space character.
	ErrInvalid = errors.New("not a single email address without a display name")
	// ErrTooLong: over MaxBytes, as written or with its domain in ASCII.
	ErrTooLong = errors.New("email address over 254 bytes")
	// ErrLookalike: an address that could pass for another: a character
	// that is ignored when shown (a variation selector, a combining
	// grapheme joiner, a Hangul filler), a blank (the Braille blank), a
	// local part that is not a PRECIS identifier (symbols, compatibility
	// characters such as ligatures) or that mixes scripts.
	ErrLookalike = errors.New("email address with invisible, compatibility or mixed-script characters")
)

// Parse returns the address in the form it is stored and compared in, when
// it is a single address that net/mail accepts, written as a bare address
// (no display name, no angle brackets, no comment) of at most 254 bytes:
//
//   - trimmed;
//   - its domain lower-cased and in its ASCII (IDNA) form;
//   - its local part a PRECIS identifier (RFC 8264 IdentifierClass, as
//     RFC 8265 usernames: letters, digits and printable ASCII), width
//     mapped (fullwidth "ｊane" is "jane") and in NFC; its ASCII letters
//     as written, every other letter case-folded (simple folding, then
//     NFC: "JÜRGEN" is "JüRGEN"), so that an ASCII lower-casing of the
//     result, which is what the waiting list's scripts compare, is the
//     address's case fold;
//   - of one script, as Unicode's "highly restrictive" level has it (UTS
//     #39: one script, or Latin with Han and the Japanese kana, Bopomofo,
//     or Hangul), Common and Inherited characters aside.
//
// Refused anywhere: control and format characters (Unicode Cc, Cf) and
// every space but the ASCII one (ErrInvalid), and every default-ignorable
// code point and blank (ErrLookalike). For the characters it accepts, the
// stored form's ASCII lower-casing is the NFKC case fold: two addresses
// that differ only in case, width or normalisation are stored and compared
// alike.
func Parse(v string) (string, error) {
	if strings.IndexFunc(v, invisible) >= 0 {
		return "", ErrInvalid
	}
	if strings.IndexFunc(v, ignorable) >= 0 {
		return "", ErrLookalike
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
	local, err := localPart(v[:at])
	if err != nil {
		return "", err
	}
	domain, err := idna.Lookup.ToASCII(strings.ToLower(v[at+1:]))
	if err != nil || domain == "" {
		return "", ErrInvalid
	}
	v = local + "@" + domain
	if len(v) > MaxBytes {
		return "", ErrTooLong
	}
	return v, nil
}

// localPart returns the stored form of a local part (see Parse).
func localPart(l string) (string, error) {
	if isASCII(l) {
		return l, nil // every printable ASCII character is a PRECIS identifier's
	}
	p, err := precis.UsernameCasePreserved.String(l)
	if err != nil || p == "" {
		return "", ErrLookalike
	}
	if isASCII(p) {
		return p, nil // fullwidth letters, as the ASCII ones they stand for
	}
	if !oneScript(p) {
		return "", ErrLookalike
	}
	return norm.NFC.String(strings.Map(foldNonASCII, p)), nil
}

// foldNonASCII is simple case folding of the characters beyond ASCII, every
// case of a letter to one (Σ, σ and final ς to σ; Ü to ü; ſ to s), one
// character for one; ASCII letters keep their case, which the waiting
// list's scripts fold themselves. (Full folding would also turn ß into
// ss: another mailbox.)
func foldNonASCII(r rune) rune {
	if r < utf8.RuneSelf {
		return r
	}
	return unicode.ToLower(unicode.ToUpper(r))
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// invisible reports whether r is refused anywhere in an email as
// ErrInvalid: a control or format character, or a space other than
// ASCII's (leading and trailing ASCII white space is trimmed before).
func invisible(r rune) bool {
	switch {
	case r < utf8.RuneSelf:
		return r < 0x20 && !unicode.IsSpace(r) || r == 0x7f
	case unicode.IsControl(r), unicode.Is(unicode.Cf, r), unicode.IsSpace(r), unicode.Is(unicode.Zs, r):
		return true
	}
	return false
}

// ignorable reports whether r is refused anywhere in an email as
// ErrLookalike: a default-ignorable code point (Unicode's
// Default_Ignorable_Code_Point, shown as nothing: the combining grapheme
// joiner U+034F, variation selectors, Hangul fillers U+115F, U+1160, U+3164,
// U+FFA0…; its format characters are refused as invisible) or the Braille
// blank U+2800, a symbol drawn as an empty cell.
func ignorable(r rune) bool {
	return r >= utf8.RuneSelf && (unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r) ||
		unicode.Is(unicode.Variation_Selector, r) || r == 0x2800)
}

// oneScript reports whether the scripts of s (Common and Inherited
// characters aside) are one, or one of the combinations that Unicode's
// "highly restrictive" level allows with Latin: Han with Hiragana and
// Katakana (Japanese), Han with Bopomofo (Chinese), Han with Hangul
// (Korean).
func oneScript(s string) bool {
	var seen []*unicode.RangeTable
	for _, r := range s {
		if unicode.In(r, unicode.Common, unicode.Inherited) {
			continue
		}
		t := scriptOf(r)
		if t == nil {
			return false // unassigned: no script to tell
		}
		if !containsTable(seen, t) {
			seen = append(seen, t)
		}
	}
	if len(seen) <= 1 {
		return true
	}
	for _, allowed := range [][]*unicode.RangeTable{
		{unicode.Latin, unicode.Han, unicode.Hiragana, unicode.Katakana},
		{unicode.Latin, unicode.Han, unicode.Bopomofo},
		{unicode.Latin, unicode.Han, unicode.Hangul},
	} {
		within := true
		for _, t := range seen {
			within = within && containsTable(allowed, t)
		}
		if within {
			return true
		}
	}
	return false
}

// scriptOf returns the table of the script of r, or nil.
func scriptOf(r rune) *unicode.RangeTable {
	for _, t := range unicode.Scripts {
		if unicode.Is(t, r) {
			return t
		}
	}
	return nil
}

func containsTable(ts []*unicode.RangeTable, t *unicode.RangeTable) bool {
	for _, u := range ts {
		if u == t {
			return true
		}
	}
	return false
}
