// Package wire is the Redis data model that Pesto's services share with the
// legacy Go, .NET and Rust services (SPEC §1): the record types, the key
// builders and the TTLs. Encoding is byte-exact; decoding is tolerant of
// every shape the legacy services wrote.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Keys and prefixes that are not API keys.
const (
	// WaitingList is the list of signups, oldest first.
	WaitingList = "waiting-list"
	// CounterPrefix starts every monthly call counter key.
	CounterPrefix = "counter/"
	// OwnPrefix starts every key that only the new services use.
	OwnPrefix = "pesto:"
)

// TTLs of the wire format.
const (
	// CounterTTL is set on a monthly counter when it is created.
	CounterTTL = 40 * 24 * time.Hour
	// TrialTTL is the lifetime of a trial key.
	TrialTTL = 24 * time.Hour
	// TrialMonthlyLimit is the MonthlyLimit of a trial key's record.
	TrialMonthlyLimit = 10
)

// The email of a trial key's record is made up: TrialEmailPrefix,
// TrialEmailChars letters or digits, '@' and TRIAL_EMAIL_DOMAIN. No one
// reads that mailbox.
const (
	TrialEmailPrefix = "trial-"
	TrialEmailChars  = 20
)

// IsTrialEmail reports whether email has the shape of a trial key's made-up
// address, whatever its domain: trial-<20 letters or digits>@<domain>, as
// this project and the old services write it. The shape alone says it, so
// that a service that does not know TRIAL_EMAIL_DOMAIN (auth) knows it too;
// a person whose own address has that shape is taken for a trial key.
func IsTrialEmail(email string) bool {
	local, domain, ok := strings.Cut(email, "@")
	if !ok || domain == "" || strings.IndexByte(domain, '@') >= 0 ||
		len(local) != len(TrialEmailPrefix)+TrialEmailChars || !strings.HasPrefix(local, TrialEmailPrefix) {
		return false
	}
	for _, c := range []byte(local[len(TrialEmailPrefix):]) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// ErrCorrupt is returned (wrapped) for a value that is not a record of the
// expected shape.
var ErrCorrupt = errors.New("corrupt record")

// CounterKey returns the key of the monthly call counter of email for the UTC
// month of t: counter/<YYYY-MM>/<email>.
func CounterKey(t time.Time, email string) string {
	var buf [128]byte // on the stack: the string is the only allocation
	return string(appendCounterKey(buf[:0], t, email))
}

// appendCounterKey appends CounterKey(t, email) to b.
func appendCounterKey(b []byte, t time.Time, email string) []byte {
	y, m, _ := t.UTC().Date()
	b = append(b, CounterPrefix...)
	b = strconv.AppendInt(b, int64(y), 10)
	b = append(b, '-')
	if m < 10 {
		b = append(b, '0')
	}
	b = strconv.AppendInt(b, int64(m), 10)
	b = append(b, '/')
	return append(b, email...)
}

// MaxTokenLen is the longest API key, in bytes, that may be looked up or stored.
const MaxTokenLen = 256

// WellFormedToken reports whether token may name an API key: 1 to
// MaxTokenLen bytes, each in 0x21–0x7E (printable ASCII, no space), and not
// one of the data model's own keys (IsOwnKey). Anything else is never looked
// up or stored.
func WellFormedToken(token string) bool {
	if token == "" || len(token) > MaxTokenLen {
		return false
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c < 0x21 || c > 0x7e {
			return false
		}
	}
	return !IsOwnKey(token)
}

// IsOwnKey reports whether key names one of the non-token keys of the data
// model (a counter, the waiting list or a pesto: key), so that a client
// cannot pass one off as an API key.
func IsOwnKey(key string) bool {
	return key == WaitingList || strings.HasPrefix(key, CounterPrefix) || strings.HasPrefix(key, OwnPrefix)
}

// NextMonth returns the start of the UTC month after t's.
func NextMonth(t time.Time) time.Time {
	y, m, _ := t.UTC().Date()
	return time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC)
}

// TokenRecord is the value stored under an API key.
type TokenRecord struct {
	UserEmail    string
	MonthlyLimit int64
	Revoked      bool
	// Rate is the key's own rate, when it has one: a field of ours, which
	// the old services ignore (they accept unknown fields).
	Rate Rate
}

// Encode returns the record exactly as every service writes it:
// {"UserEmail":"…","MonthlyLimit":N,"Revoked":false}, and only when the key
// has a rate of its own ,"Rate":"…" last.
func (r TokenRecord) Encode() []byte {
	b := make([]byte, 0, 80+len(r.UserEmail))
	b = append(b, `{"UserEmail":`...)
	b = appendString(b, r.UserEmail)
	b = append(b, `,"MonthlyLimit":`...)
	b = strconv.AppendInt(b, r.MonthlyLimit, 10)
	b = append(b, `,"Revoked":`...)
	b = strconv.AppendBool(b, r.Revoked)
	if r.Rate != (Rate{}) {
		b = append(b, `,"Rate":"`...)
		b = r.Rate.appendTo(b)
		b = append(b, '"')
	}
	return append(b, '}')
}

// DecodeTokenRecord reads a record as any service wrote it: fields in any
// order, white space, unknown fields, the lower-case aliases email, limit and
// token, and a missing Revoked (false). The email is required and the limit
// must be a JSON integer that fits an int64; a Rate, when present and not
// null, must be a rate (ParseRate); a value that names a field twice
// (fieldTwice) and anything else is ErrCorrupt.
func DecodeTokenRecord(raw string) (TokenRecord, error) {
	if r, ok := decodeCanonical(raw); ok {
		return r, nil
	}
	var v struct {
		UserEmail    *string `json:"UserEmail"`
		Email        *string `json:"email"`
		MonthlyLimit *int64  `json:"MonthlyLimit"`
		Limit        *int64  `json:"limit"`
		Revoked      *bool   `json:"Revoked"`
		Rate         *string `json:"Rate"`
	}
	if err := strictObject(raw, &v); err != nil {
		return TokenRecord{}, err
	}
	if err := fieldTwice(raw); err != nil {
		return TokenRecord{}, err
	}
	var r TokenRecord
	if v.Rate != nil {
		var err error
		if r.Rate, err = ParseRate(*v.Rate); err != nil {
			return TokenRecord{}, corrupt("bad Rate")
		}
	}
	switch {
	case v.UserEmail != nil:
		r.UserEmail = *v.UserEmail
	case v.Email != nil:
		r.UserEmail = *v.Email
	default:
		return TokenRecord{}, corrupt("no email")
	}
	switch {
	case v.MonthlyLimit != nil:
		r.MonthlyLimit = *v.MonthlyLimit
	case v.Limit != nil:
		r.MonthlyLimit = *v.Limit
	default:
		return TokenRecord{}, corrupt("no limit")
	}
	if v.Revoked != nil {
		r.Revoked = *v.Revoked
	}
	if r.UserEmail == "" {
		return TokenRecord{}, corrupt("empty email")
	}
	return r, nil
}

// recordFields are the names the record's fields are read under, each with
// its field: matched ignoring case, as encoding/json matches them.
var recordFields = [...]struct{ name, field string }{
	{"UserEmail", "UserEmail"}, {"email", "UserEmail"},
	{"MonthlyLimit", "MonthlyLimit"}, {"limit", "MonthlyLimit"},
	{"Revoked", "Revoked"},
	{"Rate", "Rate"},
}

// fieldTwice returns a corrupt error when raw, a valid JSON object, names a
// field twice: the same name twice, or a field of the record under two of
// its names (UserEmail and email, Revoked and revoked). encoding/json keeps
// the last copy, another reader the first or neither (the old Rust auth
// refuses the value); whichever it is, no service wrote such a record, so
// it is no record at all: never a key that is let through.
func fieldTwice(raw string) error {
	dec := json.NewDecoder(strings.NewReader(raw))
	if _, err := dec.Token(); err != nil { // the object's {
		return corrupt(err.Error())
	}
	seen := make(map[string]bool, len(recordFields))
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return corrupt(err.Error())
		}
		name, _ := t.(string)
		field := name
		for _, f := range recordFields {
			if strings.EqualFold(name, f.name) {
				field = f.field
				break
			}
		}
		if seen[field] {
			return corrupt("field " + field + " given twice")
		}
		seen[field] = true
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return corrupt(err.Error())
		}
	}
	return nil
}

// decodeCanonical reads the exact form Encode writes, without allocating,
// when the email needs no unescaping. It is the hot path of auth.
func decodeCanonical(raw string) (TokenRecord, bool) {
	const p1, p2, p3, p4 = `{"UserEmail":"`, `","MonthlyLimit":`, `,"Revoked":`, `,"Rate":"`
	s, ok := strings.CutPrefix(raw, p1)
	if !ok {
		return TokenRecord{}, false
	}
	end := strings.IndexByte(s, '"')
	if end <= 0 {
		return TokenRecord{}, false
	}
	email := s[:end]
	for i := 0; i < len(email); i++ {
		if c := email[i]; c == '\\' || c < 0x20 || c >= 0x80 {
			return TokenRecord{}, false
		}
	}
	s, ok = strings.CutPrefix(s[end:], p2)
	if !ok {
		return TokenRecord{}, false
	}
	end = strings.IndexByte(s, ',')
	if end <= 0 {
		return TokenRecord{}, false
	}
	digits := s[:end]
	if digits[0] == '-' {
		// Leave "-0" and friends to the full decoder.
		if len(digits) < 2 || digits[1] < '1' || digits[1] > '9' {
			return TokenRecord{}, false
		}
	} else if digits[0] == '0' && len(digits) > 1 {
		return TokenRecord{}, false
	}
	limit, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return TokenRecord{}, false
	}
	r := TokenRecord{UserEmail: email, MonthlyLimit: limit}
	s = s[end:]
	switch {
	case strings.HasPrefix(s, p3+"false"):
		s = s[len(p3+"false"):]
	case strings.HasPrefix(s, p3+"true"):
		s, r.Revoked = s[len(p3+"true"):], true
	default:
		return TokenRecord{}, false
	}
	if s == "}" {
		return r, true
	}
	// Then only a Rate that needs no unescaping, last.
	s, ok = strings.CutPrefix(s, p4)
	if !ok {
		return TokenRecord{}, false
	}
	spec, ok := strings.CutSuffix(s, `"}`)
	if !ok || strings.ContainsAny(spec, `"\`) {
		return TokenRecord{}, false
	}
	rate, err := ParseRate(spec)
	if err != nil {
		return TokenRecord{}, false
	}
	r.Rate = rate
	return r, true
}

// Signup is an element of the waiting list.
type Signup struct {
	Name     string `json:"name"`
	Email    string `json:"email"`
	Building string `json:"building"`
	Calls    int64  `json:"calls"`
}

// Encode returns the signup exactly as every service writes it:
// {"name":"…","email":"…","building":"…","calls":N}.
func (s Signup) Encode() []byte {
	b := make([]byte, 0, 64+len(s.Name)+len(s.Email)+len(s.Building))
	b = append(b, `{"name":`...)
	b = appendString(b, s.Name)
	b = append(b, `,"email":`...)
	b = appendString(b, s.Email)
	b = append(b, `,"building":`...)
	b = appendString(b, s.Building)
	b = append(b, `,"calls":`...)
	b = strconv.AppendInt(b, s.Calls, 10)
	return append(b, '}')
}

// DecodeSignup reads a waiting-list element as any service wrote it; a null
// or missing building reads as "". An element without an email is ErrCorrupt.
func DecodeSignup(raw string) (Signup, error) {
	var v struct {
		Name     string  `json:"name"`
		Email    *string `json:"email"`
		Building *string `json:"building"`
		Calls    int64   `json:"calls"`
	}
	if err := strictObject(raw, &v); err != nil {
		return Signup{}, err
	}
	if v.Email == nil {
		return Signup{}, corrupt("no email")
	}
	s := Signup{Name: v.Name, Email: *v.Email, Calls: v.Calls}
	if v.Building != nil {
		s.Building = *v.Building
	}
	return s, nil
}

// SamePerson reports whether two emails name the same person: equal ignoring
// case and surrounding white space.
func SamePerson(a, b string) bool {
	return strings.EqualFold(strings.TrimSpace(a), strings.TrimSpace(b))
}

// strictObject decodes a JSON object (and nothing else) into v.
func strictObject(raw string, v any) error {
	t := strings.TrimLeft(raw, " \t\r\n")
	if t == "" || t[0] != '{' {
		return corrupt("not a JSON object")
	}
	if err := json.Unmarshal([]byte(raw), v); err != nil {
		return corrupt(err.Error())
	}
	return nil
}

func corrupt(why string) error {
	return &corruptError{why}
}

type corruptError struct{ why string }

func (e *corruptError) Error() string { return "corrupt record: " + e.why }
func (e *corruptError) Unwrap() error { return ErrCorrupt }

// appendString appends s as a JSON string. Unlike encoding/json it leaves
// <, > and & as they are, as the Rust and .NET services wrote them.
func appendString(b []byte, s string) []byte {
	if simple(s) {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})...)
}

// simple reports whether s is printable ASCII with nothing to escape.
func simple(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
