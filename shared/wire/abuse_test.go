package wire

import (
	"errors"
	"strings"
	"testing"
)

// Hostile or odd values under a token key: each decodes to a definite
// record or is ErrCorrupt (auth answers 500 and logs it), never a panic.
func TestDecodeTokenRecordAbuse(t *testing.T) {
	deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	for _, c := range []struct {
		name, raw string
		want      *TokenRecord // nil: corrupt
	}{
		{"duplicate keys", `{"UserEmail":"a@x.com","MonthlyLimit":1,"MonthlyLimit":7,"UserEmail":"b@x.com"}`, nil},
		{"both spellings", `{"email":"a@x.com","UserEmail":"b@x.com","limit":1,"MonthlyLimit":2}`, nil},
		{"deep nesting in an unknown field", `{"UserEmail":"a@x.com","MonthlyLimit":1,"x":` + deep + `}`, nil},
		{"limit above int64", `{"UserEmail":"a@x.com","MonthlyLimit":9223372036854775808}`, nil},
		{"limit 1e30", `{"UserEmail":"a@x.com","MonthlyLimit":1e30}`, nil},
		{"limit 1e3", `{"UserEmail":"a@x.com","MonthlyLimit":1e3}`, nil},
		{"limit -0", `{"UserEmail":"a@x.com","MonthlyLimit":-0}`, &TokenRecord{UserEmail: "a@x.com", MonthlyLimit: 0, Revoked: false}},
		{"negative limit: no call allowed", `{"UserEmail":"a@x.com","MonthlyLimit":-5}`, &TokenRecord{UserEmail: "a@x.com", MonthlyLimit: -5, Revoked: false}},
		{"limit null", `{"UserEmail":"a@x.com","MonthlyLimit":null}`, nil},
		{"Revoked as a string", `{"UserEmail":"a@x.com","MonthlyLimit":1,"Revoked":"true"}`, nil},
		{"email as a number", `{"UserEmail":5,"MonthlyLimit":1}`, nil},
		{"escaped email", `{"UserEmail":"a\u0040x.com","MonthlyLimit":1}`, &TokenRecord{UserEmail: "a@x.com", MonthlyLimit: 1, Revoked: false}},
		{"unicode email", `{"UserEmail":"ü@x.com","MonthlyLimit":1}`, &TokenRecord{UserEmail: "ü@x.com", MonthlyLimit: 1, Revoked: false}},
		{"invalid UTF-8 kept as replacement", "{\"UserEmail\":\"a\xffb@x.com\",\"MonthlyLimit\":1}", &TokenRecord{UserEmail: "a\uFFFDb@x.com", MonthlyLimit: 1, Revoked: false}},
		{"trailing garbage", `{"UserEmail":"a@x.com","MonthlyLimit":1}{}`, nil},
		{"BOM", "\uFEFF" + `{"UserEmail":"a@x.com","MonthlyLimit":1}`, nil},
		{"only white space", " \n\t ", nil},
		{"null", "null", nil},
		{"a string", `"x"`, nil},
		{"huge email", `{"UserEmail":"` + strings.Repeat("a", 1<<20) + `@x.com","MonthlyLimit":1}`, &TokenRecord{UserEmail: strings.Repeat("a", 1<<20) + "@x.com", MonthlyLimit: 1, Revoked: false}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := DecodeTokenRecord(c.raw)
			if c.want == nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("got %+v, %v; want ErrCorrupt", got, err)
				}
				return
			}
			if err != nil || got != *c.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, *c.want)
			}
		})
	}
}
