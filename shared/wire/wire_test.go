package wire

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// decodeCase is a value found under a token key and what a reader must
// make of it: a record (a TokenRecord's JSON, its Rate as text), or
// "corrupt".
type decodeCase struct {
	Name string          `json:"name"`
	Raw  string          `json:"raw"`
	Want json.RawMessage `json:"want"`
}

// checkDecodeCases decodes each case, and wants its record or ErrCorrupt;
// the fast path, where it reads a case, must agree.
func checkDecodeCases(t *testing.T, cases []decodeCase) {
	t.Helper()
	if len(cases) == 0 {
		t.Fatal("no cases in fixture")
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			got, err := DecodeTokenRecord(c.Raw)
			if string(c.Want) == `"corrupt"` {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("got %+v, %v; want ErrCorrupt", got, err)
				}
				return
			}
			var want TokenRecord
			if err := json.Unmarshal(c.Want, &want); err != nil {
				t.Fatal(err)
			}
			if err != nil || got != want {
				t.Fatalf("got %+v, %v; want %+v", got, err, want)
			}
			if fast, ok := decodeCanonical(c.Raw); ok && fast != got {
				t.Fatalf("fast path %+v, full decoder %+v", fast, got)
			}
		})
	}
}

type tokenFixtures struct {
	Cases   []decodeCase `json:"cases"`
	Written struct {
		Record TokenRecord `json:"record"`
		Bytes  string      `json:"bytes"`
	} `json:"written"`
}

type signupFixtures struct {
	Cases []struct {
		Name string `json:"name"`
		Raw  string `json:"raw"`
		Want Signup `json:"want"`
	} `json:"cases"`
	SamePerson [][2]string `json:"same_person"`
	Written    struct {
		Record Signup `json:"record"`
		Bytes  string `json:"bytes"`
	} `json:"written"`
}

func load(t testing.TB, name string, v any) {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeTokenRecordFixtures(t *testing.T) {
	var f tokenFixtures
	load(t, "token-records.json", &f)
	checkDecodeCases(t, f.Cases)
}

// A value that names a field twice is no record, whichever copy a reader
// would keep; the same field under one name each is still read.
func TestDecodeTokenRecordFieldTwice(t *testing.T) {
	for _, raw := range []string{
		`{"UserEmail":"a@example.com","MonthlyLimit":5,"Revoked":true,"Revoked":false}`,
		`{"UserEmail":"a@example.com","MonthlyLimit":5,"Revoked":false,"Revoked":true}`,
		`{"UserEmail":"a@example.com","UserEmail":"b@example.com","MonthlyLimit":5,"Revoked":false}`,
		`{"UserEmail":"a@example.com","MonthlyLimit":5,"MonthlyLimit":1000000,"Revoked":false}`,
		`{"UserEmail":"a@example.com","email":"b@example.com","MonthlyLimit":5}`,
		`{"email":"a@example.com","limit":5,"MonthlyLimit":6}`,
		`{"UserEmail":"a@example.com","MonthlyLimit":5,"Revoked":true,"revoked":false}`,
		`{"UserEmail":"a@example.com","MonthlyLimit":5,"REVOKED":false,"Revoked":true}`,
		`{"UserEmail":"a@example.com","useremail":"b@example.com","MonthlyLimit":5}`,
		`{"email":"a@example.com","limit":5,"token":"k","token":"k"}`,
		`{"UserEmail":"a@example.com","MonthlyLimit":5,"Revoked":false,"Note":1,"Note":2}`,
		`{"UserEmail":"a@example.com","MonthlyLimit":5,"Revoked":null,"Revoked":true}`,
		`{"UserEmail":"a@example.com","MonthlyLimit":5,"Rate":"10/s","rate":"off"}`,
	} {
		if got, err := DecodeTokenRecord(raw); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %+v, %v; want ErrCorrupt", raw, got, err)
		}
	}
	for raw, want := range map[string]TokenRecord{
		`{"email":"a@example.com","limit":5,"token":"k","Token":"k"}`:                         {UserEmail: "a@example.com", MonthlyLimit: 5, Revoked: false},
		`{"UserEmail":"a@example.com","MonthlyLimit":5,"Revoked":false,"Note":{"a":1,"a":2}}`: {UserEmail: "a@example.com", MonthlyLimit: 5, Revoked: false},
		`{ "Revoked" : true , "MonthlyLimit" : 5 , "UserEmail" : "a@example.com" }`:           {UserEmail: "a@example.com", MonthlyLimit: 5, Revoked: true},
		`{"useremail":"a@example.com","monthlylimit":5,"revoked":true}`:                       {UserEmail: "a@example.com", MonthlyLimit: 5, Revoked: true},
	} {
		if got, err := DecodeTokenRecord(raw); err != nil || got != want {
			t.Errorf("%s: got %+v, %v; want %+v", raw, got, err, want)
		}
	}
}

func TestTokenRecordEncode(t *testing.T) {
	var f tokenFixtures
	load(t, "token-records.json", &f)
	if got := string(f.Written.Record.Encode()); got != f.Written.Bytes {
		t.Fatalf("got  %s\nwant %s", got, f.Written.Bytes)
	}
	for _, c := range []struct {
		rec  TokenRecord
		want string
	}{
		{TokenRecord{UserEmail: "a@example.com", MonthlyLimit: 0, Revoked: true}, `{"UserEmail":"a@example.com","MonthlyLimit":0,"Revoked":true}`},
		{TokenRecord{UserEmail: "a&b@example.com", MonthlyLimit: -1, Revoked: false}, `{"UserEmail":"a&b@example.com","MonthlyLimit":-1,"Revoked":false}`},
		{TokenRecord{UserEmail: `q"\@example.com`, MonthlyLimit: 9223372036854775807, Revoked: false}, `{"UserEmail":"q\"\\@example.com","MonthlyLimit":9223372036854775807,"Revoked":false}`},
		{TokenRecord{UserEmail: "ü@example.com", MonthlyLimit: 1, Revoked: false}, `{"UserEmail":"ü@example.com","MonthlyLimit":1,"Revoked":false}`},
	} {
		got := c.rec.Encode()
		if string(got) != c.want {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
		back, err := DecodeTokenRecord(string(got))
		if err != nil || back != c.rec {
			t.Errorf("round trip of %s: got %+v, %v", got, back, err)
		}
	}
}

// The fast path must agree with the full decoder on every input.
func TestDecodeCanonicalAgrees(t *testing.T) {
	for _, raw := range []string{
		`{"UserEmail":"a@b.c","MonthlyLimit":1,"Revoked":false}`,
		`{"UserEmail":"a@b.c","MonthlyLimit":-5,"Revoked":true}`,
		`{"UserEmail":"a@b.c","MonthlyLimit":01,"Revoked":false}`,
		`{"UserEmail":"a@b.c","MonthlyLimit":-0,"Revoked":false}`,
		`{"UserEmail":"a@b.c","MonthlyLimit":1.5,"Revoked":false}`,
		`{"UserEmail":"a@b.c","MonthlyLimit":1,"Revoked":false}x`,
		`{"UserEmail":"a@b.c","MonthlyLimit":1,"Revoked":null}`,
		`{"UserEmail":"","MonthlyLimit":1,"Revoked":false}`,
		`{"UserEmail":"a\u0040b.c","MonthlyLimit":1,"Revoked":false}`,
		`{"UserEmail":"a@b.c","MonthlyLimit":99999999999999999999,"Revoked":false}`,
	} {
		fast, ok := decodeCanonical(raw)
		if !ok {
			continue
		}
		full, err := DecodeTokenRecord(raw[:len(raw)-1] + " }") // defeats the fast path
		if err != nil || full != fast {
			t.Errorf("%s: fast %+v, full %+v %v", raw, fast, full, err)
		}
	}
}

func TestDecodeSignupFixtures(t *testing.T) {
	var f signupFixtures
	load(t, "waiting-list.json", &f)
	if len(f.Cases) == 0 {
		t.Fatal("no cases in fixture")
	}
	for _, c := range f.Cases {
		t.Run(c.Name, func(t *testing.T) {
			got, err := DecodeSignup(c.Raw)
			if err != nil || got != c.Want {
				t.Fatalf("got %+v, %v; want %+v", got, err, c.Want)
			}
		})
	}
	for _, p := range f.SamePerson {
		if !SamePerson(p[0], p[1]) {
			t.Errorf("SamePerson(%q, %q) = false", p[0], p[1])
		}
	}
	if SamePerson("jane@example.com", "jane@example.org") {
		t.Error("different emails are the same person")
	}
	if got := string(f.Written.Record.Encode()); got != f.Written.Bytes {
		t.Fatalf("got  %s\nwant %s", got, f.Written.Bytes)
	}
}

func TestDecodeSignupCorrupt(t *testing.T) {
	for _, raw := range []string{"", "null", "[]", `"x"`, `{"name":"a"}`, `{"name":"a","email":"b","calls":"1"}`} {
		if _, err := DecodeSignup(raw); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%q: got %v, want ErrCorrupt", raw, err)
		}
	}
}

func TestSignupEncodeEscapes(t *testing.T) {
	s := Signup{Name: "Reinaldy 👋 <b>", Email: "r@example.com", Building: "line\nbreak \"q\"", Calls: 0}
	want := `{"name":"Reinaldy 👋 <b>","email":"r@example.com","building":"line\nbreak \"q\"","calls":0}`
	if got := string(s.Encode()); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	back, err := DecodeSignup(want)
	if err != nil || back != s {
		t.Fatalf("round trip: %+v %v", back, err)
	}
}

func TestKeys(t *testing.T) {
	at := time.Date(2026, 2, 28, 23, 59, 59, 0, time.FixedZone("x", -3600)) // 2026-03-01 00:59:59 UTC
	if got, want := CounterKey(at, "Jane@example.com"), "counter/2026-03/Jane@example.com"; got != want {
		t.Errorf("CounterKey = %q, want %q", got, want)
	}
	if got, want := CounterKey(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), "a"), "counter/2026-11/a"; got != want {
		t.Errorf("CounterKey = %q, want %q", got, want)
	}
	if got, want := NextMonth(time.Date(2026, 12, 31, 23, 0, 0, 0, time.UTC)), time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("NextMonth = %v, want %v", got, want)
	}
	for key, want := range map[string]bool{
		"waiting-list": true, "counter/2026-01/a": true, "pesto:outbox": true,
		"waiting-list2": false, "counter": false, "pesto": false, "abc": false,
	} {
		if got := IsOwnKey(key); got != want {
			t.Errorf("IsOwnKey(%q) = %v", key, got)
		}
	}
	if CounterTTL != 3456000*time.Second || TrialTTL != 86400*time.Second {
		t.Error("TTLs differ from SPEC §1")
	}
}

func TestWellFormedToken(t *testing.T) {
	for _, c := range []struct {
		token string
		want  bool
	}{
		{"a", true},
		{"TRIAL-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUV", true},
		{"!~", true},
		{strings.Repeat("k", MaxTokenLen), true},
		{strings.Repeat("k", MaxTokenLen+1), false},
		{"", false},
		{"with space", false},
		{"tab\there", false},
		{"del\x7f", false},
		{"é", false},
		{"waiting-list", false},
		{"counter/2026-01/jane@example.com", false},
		{"pesto:outbox", false},
		{"waiting-list2", true},
	} {
		if got := WellFormedToken(c.token); got != c.want {
			t.Errorf("WellFormedToken(%q) = %v, want %v", c.token, got, c.want)
		}
	}
}

func BenchmarkDecodeTokenRecord(b *testing.B) {
	for _, c := range []struct{ name, raw string }{
		{"canonical", `{"UserEmail":"johndoe@example.com","MonthlyLimit":100,"Revoked":false}`},
		{"canonical with a rate", `{"UserEmail":"johndoe@example.com","MonthlyLimit":100,"Revoked":false,"Rate":"600/m;burst=100"}`},
		{"legacy", `{"email":"johndoe@example.com","limit":100,"token":"abc"}`},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeTokenRecord(c.raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCounterKey(b *testing.B) {
	b.ReportAllocs()
	now := time.Now()
	for b.Loop() {
		_ = CounterKey(now, "johndoe@example.com")
	}
}

// A trial key's made-up address is known by its shape alone, whatever the
// domain; anything else is somebody's.
func TestIsTrialEmail(t *testing.T) {
	for _, c := range []struct {
		email string
		want  bool
	}{
		{"trial-AbCdEfGhIj0123456789@pesto.teknologiumum.com", true},
		{"trial-abcdefghij0123456789@example.com", true},
		{"trial-abcdefghij012345678@example.com", false},   // 19
		{"trial-abcdefghij01234567890@example.com", false}, // 21
		{"Trial-abcdefghij0123456789@example.com", false},
		{"trial_abcdefghij0123456789@example.com", false},
		{"trial-abcdefghij012345678-@example.com", false},
		{"trial-abcdefghij0123456789@", false},
		{"trial-abcdefghij0123456789", false},
		{"trial-abcdefghij0123456789@a@b", false},
		{"trial-x@pesto.teknologiumum.com", false},
		{"jane@example.com", false},
		{"", false},
	} {
		if got := IsTrialEmail(c.email); got != c.want {
			t.Errorf("IsTrialEmail(%q) = %v, want %v", c.email, got, c.want)
		}
	}
}
