package address

import (
	"errors"
	"testing"

	"pesto/shared/wire"
)

// Addresses that look alike are refused or stored alike: what the waiting
// list compares (an ASCII lower-casing of the stored form) is one for each
// group of look-alikes.
func TestParseLookalikes(t *testing.T) {
	for _, c := range []struct {
		in, want string // want "": refused with err
		err      error
	}{
		{"jane@example.com", "jane@example.com", nil},
		{"ja\u034fne@example.com", "", ErrLookalike},                            // combining grapheme joiner
		{"jane\ufe0f@example.com", "", ErrLookalike},                            // variation selector
		{"ja\U000E0100ne@example.com", "", ErrLookalike},                        // variation selector supplement
		{"ja\u3164ne@example.com", "", ErrLookalike},                            // Hangul filler
		{"ja\u115fne@example.com", "", ErrLookalike},                            // Hangul choseong filler
		{"ja\uffa0ne@example.com", "", ErrLookalike},                            // halfwidth Hangul filler
		{"ja\u2800ne@example.com", "", ErrLookalike},                            // Braille blank
		{"ja\u180bne@example.com", "", ErrLookalike},                            // Mongolian free variation selector
		{"jane@exa\u034fmple.com", "", ErrLookalike},                            // in the domain too
		{"ja\u200bne@example.com", "", ErrInvalid},                              // zero-width space (a format character)
		{"\uff4aane@example.com", "jane@example.com", nil},                      // fullwidth ｊ
		{"\uff2aANE@example.com", "JANE@example.com", nil},                      // fullwidth Ｊ
		{"j\u0430ne@example.com", "", ErrLookalike},                             // Cyrillic а among Latin letters
		{"\u0430\u043d\u044f@example.ru", "\u0430\u043d\u044f@example.ru", nil}, // Cyrillic alone
		{"\u0410\u041d\u042f@example.ru", "\u0430\u043d\u044f@example.ru", nil}, // its capitals
		{"J\u00fcrgen@B\u00dcCHER.example", "J\u00fcrgen@xn--bcher-kva.example", nil},
		{"J\u00dcRGEN@b\u00fccher.example", "J\u00fcRGEN@xn--bcher-kva.example", nil},
		{"Ju\u0308rgen@example.com", "J\u00fcrgen@example.com", nil}, // decomposed: NFC
		{"\u039f\u0394\u039f\u03a3@example.gr", "\u03bf\u03b4\u03bf\u03c3@example.gr", nil},
		{"\u03bf\u03b4\u03bf\u03c2@example.gr", "\u03bf\u03b4\u03bf\u03c3@example.gr", nil},             // final sigma
		{"stra\u00dfe@example.de", "stra\u00dfe@example.de", nil},                                       // ß stays: ss is another mailbox
		{"\u5c71\u7530\u305f\u308d\u3046@example.jp", "\u5c71\u7530\u305f\u308d\u3046@example.jp", nil}, // Han and Hiragana
		{"taro\u5c71\u7530@example.jp", "taro\u5c71\u7530@example.jp", nil},                             // Latin and Han
		{"\ufb01le@example.com", "", ErrLookalike},                                                      // the ligature ﬁ
		{"\u2603@example.com", "", ErrLookalike},                                                        // a symbol
		{"x\u00b2@example.com", "", ErrLookalike},                                                       // superscript two
		{"\u212aelvin@example.com", "Kelvin@example.com", nil},                                          // the Kelvin sign is K (NFC)
	} {
		got, err := Parse(c.in)
		if got != c.want || !errors.Is(err, c.err) || (err == nil) != (c.err == nil) {
			t.Errorf("Parse(%+q) = %q, %v; want %q, %v", c.in, got, err, c.want, c.err)
		}
	}
	// Stored forms are their own: parsing them again changes nothing.
	for _, v := range []string{"J\u00fcRGEN@xn--bcher-kva.example", "\u03bf\u03b4\u03bf\u03c3@example.gr", "jane@example.com"} {
		if got, err := Parse(v); got != v || err != nil {
			t.Errorf("Parse(%+q) = %q, %v; want it unchanged", v, got, err)
		}
	}
	// Look-alikes that are accepted are one person.
	for _, pair := range [][2]string{
		{"\uff4aane@example.com", "JANE@example.com"},
		{"J\u00dcRGEN@b\u00fccher.example", "j\u00fcrgen@xn--bcher-kva.example"},
		{"\u039f\u0394\u039f\u03a3@example.gr", "\u03bf\u03b4\u03bf\u03c2@example.gr"},
	} {
		a, _ := Parse(pair[0])
		b, _ := Parse(pair[1])
		if !wire.SamePerson(a, b) || asciiLower(a) != asciiLower(b) {
			t.Errorf("%+q and %+q stored as %+q and %+q: not one person", pair[0], pair[1], a, b)
		}
	}
}

// asciiLower is how the waiting list's scripts compare emails (Lua's
// string.lower).
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
