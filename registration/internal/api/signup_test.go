package api

import (
	"net/mail"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"pesto/registration/internal/address"
	"pesto/shared/wire"
)

// Whatever a client sends, the parsers answer a signup that keeps every rule
// of SPEC §3 or a 4xx, and never panic.
func FuzzSignupFromJSON(f *testing.F) {
	f.Add([]byte(`{"name":"Jane","email":"jane@example.com","building":"a bot","calls":1000}`))
	f.Add([]byte(`{"name":" a ","email":" A@B.co ","building":null,"calls":0}`))
	f.Add([]byte(`{"name":"\u0000","email":"<a@b.c>","calls":1e3}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := signupFromJSON(body)
		checkFuzzedSignup(t, s, err)
	})
}

func FuzzSignupFromForm(f *testing.F) {
	f.Add([]byte(`name=Jane&email=jane%40example.com&building=bot&calls=10`))
	f.Add([]byte(`name=%FF&email=a%40b&calls=-1`))
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := signupFromForm(body)
		checkFuzzedSignup(t, s, err)
	})
}

func checkFuzzedSignup(t *testing.T, s wire.Signup, err error) {
	t.Helper()
	if err != nil {
		if ae := answerOf(err); ae == nil || ae.status != 400 {
			t.Fatalf("error %v is not a 400", err)
		}
		return
	}
	n := utf8.RuneCountInString(s.Name)
	if n < 1 || n > maxNameRunes || s.Name != strings.TrimSpace(s.Name) || strings.IndexFunc(s.Name, unicode.IsControl) >= 0 ||
		!utf8.ValidString(s.Name) || !utf8.ValidString(s.Building) || utf8.RuneCountInString(s.Building) > maxBuildingRunes ||
		s.Calls < 0 || s.Calls > maxCalls || len(s.Email) > address.MaxBytes {
		t.Fatalf("accepted %+v", s)
	}
	if a, err := mail.ParseAddress(s.Email); err != nil || a.Address != s.Email || a.Name != "" {
		t.Fatalf("accepted email %q", s.Email)
	}
	back, err := wire.DecodeSignup(string(s.Encode()))
	if err != nil || back != s {
		t.Fatalf("stored bytes do not read back: %+v %v", back, err)
	}
}
