package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/redis/rueidis"
)

// The old services, as they run in production today (the Rust auth and
// registration of teknologi-umum/pesto at commit 7059c28, 2024-10-28),
// modelled in Go for the side-by-side tests (sidebyside_test.go): their
// crates cannot be fetched here, so their behaviour is read from their
// sources and written down line by line. The numbers in the comments are
// lines of those sources, auth-main.rs (its main.rs) and
// registration-main.rs, the same the migration guide cites. Each model
// sends Redis the commands its service sends, in the same order, and gives
// the answers it gives; what no test needs (Sentry, tracing, the error texts
// of the HTTP framework's extractors) is left out.

// oldAuth behaves as the old auth does (auth-main.rs): the hook on / and
// /healthz, on one Redis connection without caching.
type oldAuth struct {
	redis rueidis.Client
	// now is chrono::Utc::now (172, 201).
	now func() time.Time
	// between, when set, runs between the read of the counter and its
	// write-back: a test's hold on the race window of 171–214.
	between func()
}

// startOldAuth serves an oldAuth on a free loopback port, against the
// Redis at redisAddr, until the test ends.
func startOldAuth(t *testing.T, redisAddr string) (*oldAuth, string) {
	t.Helper()
	a := &oldAuth{redis: plainClient(t, redisAddr), now: time.Now}
	s := httptest.NewServer(a)
	t.Cleanup(s.Close)
	return a, s.Listener.Addr().String()
}

// plainClient is a Redis client without client-side caching, as redis-rs's
// multiplexed connection is (auth-main.rs:241, registration-main.rs:788).
func plainClient(t *testing.T, addr string) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func (a *oldAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/healthz" && (r.Method == http.MethodGet || r.Method == http.MethodHead): // 248, 17-19
		reply(w, http.StatusOK, "text/plain; charset=utf-8", "OK")
	case r.URL.Path == "/": // 249: any method
		a.authenticate(w, r)
	default: // axum's fallback: an empty 404
		w.WriteHeader(http.StatusNotFound)
	}
}

// Answers of the old auth (35, 44, 51, 58, 67, 78, 87, 98).
const (
	oldMustBeSupplied = `{"message":"Token must be supplied"}`
	oldNotRegistered  = `{"message":"Token not registered"}`
	oldRevoked        = `{"message":"Token has been revoked"}`
	oldOverQuota      = `{"message":"Monthly limit exceeded"}`
	oldInternal       = `{"message":"Internal server error"}`
)

func (a *oldAuth) authenticate(w http.ResponseWriter, r *http.Request) {
	ctx := context.Background()
	// 26-37: the header as text, or none: http's HeaderValue::to_str takes
	// visible ASCII and tab only. An empty header is text, and looked up.
	v := r.Header.Values("X-Pesto-Token")
	if len(v) == 0 || !visibleASCII(v[0]) {
		reply(w, http.StatusUnauthorized, "application/json", oldMustBeSupplied)
		return
	}
	token := v[0]

	// 152-168: GET <token>, read as a TokenValue (125-133).
	raw, err := a.redis.Do(ctx, a.redis.B().Get().Key(token).Build()).ToString()
	switch {
	case rueidis.IsRedisNil(err): // 162, 40-46
		reply(w, http.StatusUnauthorized, "application/json", oldNotRegistered)
		return
	case err != nil: // 163-166, 47-53: WRONGTYPE too
		reply(w, http.StatusInternalServerError, "application/json", oldInternal)
		return
	}
	rec, ok := oldAuthRecord(raw)
	if !ok { // 158-159, 54-60
		reply(w, http.StatusInternalServerError, "application/json", oldInternal)
		return
	}
	if rec.revoked { // 64-70
		reply(w, http.StatusUnauthorized, "application/json", oldRevoked)
		return
	}

	// 171-187: GET counter/<YYYY-MM>/<email>, missing = 0.
	key := "counter/" + a.now().UTC().Format("2006-01") + "/" + rec.email
	counter := int64(0)
	s, err := a.redis.Do(ctx, a.redis.B().Get().Key(key).Build()).ToString()
	switch {
	case rueidis.IsRedisNil(err):
	case err != nil: // 182-185, 74-80
		reply(w, http.StatusInternalServerError, "application/json", oldInternal)
		return
	default:
		if counter, err = strconv.ParseInt(s, 10, 64); err != nil { // 178, 74-80
			reply(w, http.StatusInternalServerError, "application/json", oldInternal)
			return
		}
	}
	if counter > rec.limit { // 83-89: over only past the limit, so limit+1 calls pass
		reply(w, http.StatusTooManyRequests, "application/json", oldOverQuota)
		return
	}

	// 189-214: trial emails are not counted; any other is written back as
	// what was read plus one, with a fresh 40-day TTL.
	if !(strings.HasPrefix(strings.ToLower(rec.email), "trial") && strings.HasSuffix(rec.email, "@pesto.teknologiumum.com")) {
		if a.between != nil {
			a.between()
		}
		set := a.redis.B().Setex().Key(key).Seconds(60 * 60 * 24 * 40).Value(strconv.FormatInt(counter+1, 10)).Build()
		if err := a.redis.Do(ctx, set).Error(); err != nil { // 207-212, 91-101
			reply(w, http.StatusInternalServerError, "application/json", oldInternal)
			return
		}
	}
	reply(w, http.StatusOK, "text/plain", "") // 106
}

// visibleASCII is http's HeaderValue::to_str test: every byte a visible
// ASCII character, space or tab.
func visibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 || c > 0x7e) && c != '\t' {
			return false
		}
	}
	return true
}

func reply(w http.ResponseWriter, status int, contentType, body string) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// oldRecord is the old auth's TokenValue (125-133).
type oldRecord struct {
	email   string
	limit   int64
	revoked bool
}

// oldAuthRecord reads raw as serde_json reads the old auth's TokenValue:
// UserEmail, MonthlyLimit and Revoked, all three required, by those exact
// names (no alias, no default), each once; unknown fields ignored; and, as
// serde reads any struct, a JSON array of the three in that order too.
func oldAuthRecord(raw string) (oldRecord, bool) {
	f, ok := serdeStruct(raw, [][]string{{"UserEmail"}, {"MonthlyLimit"}, {"Revoked"}}, true)
	if !ok {
		return oldRecord{}, false
	}
	var r oldRecord
	return r, serdeString(f["UserEmail"], &r.email) && serdeInt(f["MonthlyLimit"], &r.limit) && serdeBool(f["Revoked"], &r.revoked)
}

// serdeStruct reads raw as serde_json reads a struct with a derived
// Deserialize: a JSON object whose names are matched exactly, each field
// under its names (the first, then its aliases); a field given twice is an
// error, an unknown name is skipped. With seq, a JSON array of exactly one
// value per field, in order, is read too. It returns the raw value of each
// field present, by its first name. Text that is not valid UTF-8, or not
// one JSON value, is an error.
func serdeStruct(raw string, fields [][]string, seq bool) (map[string]json.RawMessage, bool) {
	if !utf8.ValidString(raw) || !json.Valid([]byte(raw)) {
		return nil, false
	}
	out := map[string]json.RawMessage{}
	t := strings.TrimLeft(raw, " \t\r\n")
	switch {
	case seq && strings.HasPrefix(t, "["):
		var elems []json.RawMessage
		if json.Unmarshal([]byte(raw), &elems) != nil || len(elems) != len(fields) {
			return nil, false
		}
		for i, names := range fields {
			out[names[0]] = elems[i]
		}
		return out, true
	case !strings.HasPrefix(t, "{"):
		return nil, false
	}
	dec := json.NewDecoder(strings.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		return nil, false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		name, _ := tok.(string)
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, false
		}
		for _, names := range fields {
			for _, n := range names {
				if n != name {
					continue
				}
				if _, twice := out[names[0]]; twice {
					return nil, false // serde's "duplicate field"
				}
				out[names[0]] = value
			}
		}
	}
	return out, true
}

// serdeString reads a JSON string into s (serde's String: null is an
// error); a missing value is an error.
func serdeString(raw json.RawMessage, s *string) bool {
	return raw != nil && !isNull(raw) && json.Unmarshal(raw, s) == nil
}

// serdeInt reads a JSON integer that fits an i64 (no fraction, no
// exponent, not null).
func serdeInt(raw json.RawMessage, n *int64) bool {
	return raw != nil && !isNull(raw) && json.Unmarshal(raw, n) == nil
}

// serdeBool reads true or false.
func serdeBool(raw json.RawMessage, b *bool) bool {
	return raw != nil && !isNull(raw) && json.Unmarshal(raw, b) == nil
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

// appendSerdeString appends s as serde_json writes a string: only ", \ and
// the control characters escaped (\b \f \n \r \t, others \u00xx); every
// other character, non-ASCII and <, >, & included, as it is.
func appendSerdeString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\b':
			b = append(b, `\b`...)
		case '\f':
			b = append(b, `\f`...)
		case '\n':
			b = append(b, `\n`...)
		case '\r':
			b = append(b, `\r`...)
		case '\t':
			b = append(b, `\t`...)
		default:
			if c < 0x20 {
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			} else {
				b = append(b, c)
			}
		}
	}
	return append(b, '"')
}
