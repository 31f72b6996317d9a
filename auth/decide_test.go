package main

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"pesto/shared/redistest"
	"pesto/shared/servicetest"
)

// One minute before the month ends: RateLimit-Reset and Retry-After are 60.
var endOfMonth = time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC)

const counterNov = "counter/2026-11/"

// Every row of the decision table of SPEC §2, status and body byte for byte.
func TestDecisionTable(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok-ok", `{"UserEmail":"ok@example.com","MonthlyLimit":3,"Revoked":false}`)
	rs.Do("SET", "tok-revoked", `{"UserEmail":"rev@example.com","MonthlyLimit":3,"Revoked":true}`)
	rs.Do("SET", "tok-used", `{"UserEmail":"used@example.com","MonthlyLimit":2,"Revoked":false}`)
	rs.Do("SET", counterNov+"used@example.com", "2")
	rs.Do("SET", "tok-corrupt", `{"UserEmail":"c@example.com","MonthlyLimit":"lots"}`)
	rs.Do("SET", "tok-bad-counter", `{"UserEmail":"bc@example.com","MonthlyLimit":3,"Revoked":false}`)
	rs.Do("SET", counterNov+"bc@example.com", "many")
	rs.Do("RPUSH", "tok-list", "x")
	// Decided beside the old auth (README, "Beside the old auth"): a missing
	// Revoked is not revoked; a field named twice is no record.
	rs.Do("SET", "tok-no-revoked", `{"UserEmail":"nr@example.com","MonthlyLimit":3}`)
	rs.Do("SET", "tok-twice", `{"UserEmail":"tw@example.com","MonthlyLimit":3,"Revoked":true,"Revoked":false}`)
	rs.Do("SET", "tok-twice-spelled", `{"UserEmail":"tw@example.com","MonthlyLimit":3,"Revoked":false,"revoked":true}`)
	app, _ := newTestApp(t, rs, nil, endOfMonth)

	const (
		noToken    = `{"message":"Token must be supplied"}`
		notReg     = `{"message":"Token not registered"}`
		revoked    = `{"message":"Token has been revoked"}`
		overQuota  = `{"message":"Monthly limit exceeded"}`
		internal   = `{"message":"Internal server error"}`
		noHeader   = "-"
		retryMonth = "60"
	)
	for _, c := range []struct {
		name, token string
		status      int
		body        string
		retryAfter  string
		rate        [3]string // RateLimit-Limit, -Remaining, -Reset; empty: none
	}{
		{"no header", noHeader, 401, noToken, "", [3]string{}},
		{"empty header", "", 401, noToken, "", [3]string{}},
		{"a byte outside visible ASCII", "tök", 401, notReg, "", [3]string{}},
		{"no such key", "tok-missing", 401, notReg, "", [3]string{}},
		{"revoked", "tok-revoked", 401, revoked, "", [3]string{}},
		{"allowed", "tok-ok", 200, "", "", [3]string{"3", "2", "60"}},
		{"allowed again", "tok-ok", 200, "", "", [3]string{"3", "1", "60"}},
		{"last allowed", "tok-ok", 200, "", "", [3]string{"3", "0", "60"}},
		{"quota used up", "tok-ok", 429, overQuota, retryMonth, [3]string{"3", "0", "60"}},
		{"quota used up by earlier calls", "tok-used", 429, overQuota, retryMonth, [3]string{"2", "0", "60"}},
		{"corrupt record", "tok-corrupt", 500, internal, "", [3]string{}},
		{"counter not a number", "tok-bad-counter", 500, internal, "", [3]string{}},
		{"key of another type", "tok-list", 500, internal, "", [3]string{}},
		{"record without Revoked", "tok-no-revoked", 200, "", "", [3]string{"3", "2", "60"}},
		{"record with a field twice", "tok-twice", 500, internal, "", [3]string{}},
		{"record with a field under two spellings", "tok-twice-spelled", 500, internal, "", [3]string{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{}
			if c.token != noHeader {
				h[headerToken] = []string{c.token}
			}
			got := testCall(t, app, "GET", h)
			if got.Status != c.status || got.Body != c.body {
				t.Fatalf("got %d %q, want %d %q", got.Status, got.Body, c.status, c.body)
			}
			if c.body != "" {
				var msg struct{ Message string }
				_ = json.Unmarshal([]byte(c.body), &msg)
				if ct := got.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q", ct)
				}
				if xe := got.Header.Get("X-Pesto-Error"); xe != msg.Message {
					t.Errorf("X-Pesto-Error = %q, want %q", xe, msg.Message)
				}
			} else {
				if got.Header.Get("X-Pesto-Error") != "" {
					t.Errorf("X-Pesto-Error on a 200")
				}
				if ct, ok := got.Header["Content-Type"]; ok {
					t.Errorf("Content-Type %q on an empty 200", ct) // no body, no type
				}
			}
			if ra := got.Header.Get("Retry-After"); ra != c.retryAfter {
				t.Errorf("Retry-After = %q, want %q", ra, c.retryAfter)
			}
			rate := [3]string{got.Header.Get("RateLimit-Limit"), got.Header.Get("RateLimit-Remaining"), got.Header.Get("RateLimit-Reset")}
			if rate != c.rate {
				t.Errorf("RateLimit-* = %q, want %q", rate, c.rate)
			}
			for name, values := range got.Header {
				for _, v := range values {
					if strings.Contains(v, "@") || (len(c.token) > 3 && strings.Contains(v, c.token)) {
						t.Errorf("header %s: %q carries the email or token", name, v)
					}
				}
			}
		})
	}
	if got := rs.Do("GET", counterNov+"ok@example.com"); got != "3" {
		t.Errorf("counter = %q, want 3: denied calls are not counted", got)
	}
	if got := rs.Do("GET", counterNov+"used@example.com"); got != "2" {
		t.Errorf("counter = %q, want 2", got)
	}
}

// Malformed tokens, and tokens naming our own keys, are refused without a
// Redis lookup, even where the key holds something that looks like a record.
func TestMalformedTokensNeverReachRedis(t *testing.T) {
	rs := redistest.Start(t)
	for _, key := range []string{"waiting-list", "pesto:thing", counterNov + "x@example.com", strings.Repeat("a", 257)} {
		rs.Do("SET", key, validRecord)
	}
	rs.Do("SET", strings.Repeat("a", 256), validRecord)
	app, store := newTestApp(t, rs, nil, endOfMonth)
	for _, token := range []string{
		strings.Repeat("a", 257),
		"waiting-list", "pesto:thing", "pesto:", counterNov + "x@example.com", "counter/",
		"with space", "tab\there", "tök",
	} {
		got := testCall(t, app, "GET", tokenHeader(token))
		if got.Status != 401 || got.Body != `{"message":"Token not registered"}` {
			t.Errorf("%q: got %d %q", token, got.Status, got.Body)
		}
	}
	if n := store.lookups(); n != 0 {
		t.Fatalf("%d Redis lookups for malformed tokens, want 0", n)
	}
	// The longest well-formed token is looked up.
	if got := testCall(t, app, "GET", tokenHeader(strings.Repeat("a", 256))); got.Status != 200 || store.lookups() != 1 {
		t.Fatalf("256-byte token: %+v after %d lookups", got, store.lookups())
	}
}

// The hook answers every method: proxies, probes and preserveRequestMethod.
func TestEveryMethod(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok", validRecord)
	app, _ := newTestApp(t, rs, nil, endOfMonth)
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND", "FOO"} {
		if got := testCall(t, app, m, tokenHeader("tok")); got.Status != 200 || got.Body != "" {
			t.Errorf("%s: %d %q", m, got.Status, got.Body)
		}
		if got := testCall(t, app, m, http.Header{}); got.Status != 401 {
			t.Errorf("%s without token: %d", m, got.Status)
		}
	}
}

// The hook is / alone: any other path is a JSON 404, whatever the key, and
// counts nothing (the old auth's was an empty 404: README, "Beside the old
// auth").
func TestUnknownPath(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok", validRecord)
	app, store := newTestApp(t, rs, nil, endOfMonth)
	for _, path := range []string{"/api/execute", "/auth", "/favicon.ico"} {
		got := appCall(t, app, "GET", path, tokenHeader("tok"))
		if got.Status != 404 || got.Body != `{"message":"Not found"}` ||
			got.Header.Get("Content-Type") != "application/json" || got.Header.Get("X-Pesto-Error") != "Not found" {
			t.Errorf("GET %s: %d %q %v", path, got.Status, got.Body, got.Header)
		}
	}
	if n := store.lookups(); n != 0 || rs.Do("EXISTS", counterNov+"jane@example.com") != "0" {
		t.Fatalf("%d lookups, counter %q: an unknown path looked the key up", n, rs.Do("GET", counterNov+"jane@example.com"))
	}
}

// Every record shape of the legacy services, through the handler.
func TestTokenRecordFixtures(t *testing.T) {
	var f struct {
		Cases []struct {
			Name string          `json:"name"`
			Raw  string          `json:"raw"`
			Want json.RawMessage `json:"want"`
		} `json:"cases"`
	}
	servicetest.Fixture(t, servicetest.LegacyFixtures+"token-records.json", &f)
	if len(f.Cases) == 0 {
		t.Fatal("fixture: no cases")
	}
	rs := redistest.Start(t)
	app, _ := newTestApp(t, rs, nil, endOfMonth)
	for i, c := range f.Cases {
		t.Run(c.Name, func(t *testing.T) {
			token := "fixture-" + strconv.Itoa(i)
			rs.Do("SET", token, c.Raw)
			got := testCall(t, app, "GET", tokenHeader(token))
			var want struct {
				UserEmail    string
				MonthlyLimit int64
				Revoked      bool
			}
			switch {
			case string(c.Want) == `"corrupt"`:
				if got.Status != 500 || got.Body != `{"message":"Internal server error"}` {
					t.Fatalf("got %d %q, want 500", got.Status, got.Body)
				}
				return
			case json.Unmarshal(c.Want, &want) != nil:
				t.Fatalf("bad fixture %s", c.Want)
			case want.Revoked:
				if got.Status != 401 || got.Body != `{"message":"Token has been revoked"}` {
					t.Fatalf("got %d %q, want revoked", got.Status, got.Body)
				}
			case strings.HasPrefix(want.UserEmail, "trial"): // unmetered by default
				if got.Status != 200 || got.Header.Get("RateLimit-Limit") != "" {
					t.Fatalf("got %d %v, want unmetered 200", got.Status, got.Header)
				}
			case want.MonthlyLimit == 0:
				if got.Status != 429 {
					t.Fatalf("got %d %q, want 429", got.Status, got.Body)
				}
			default:
				if got.Status != 200 || got.Header.Get("RateLimit-Limit") != strconv.FormatInt(want.MonthlyLimit, 10) ||
					got.Header.Get("RateLimit-Remaining") != strconv.FormatInt(want.MonthlyLimit-1, 10) {
					t.Fatalf("got %d %v, want allowed with limit %d", got.Status, got.Header, want.MonthlyLimit)
				}
				if n := rs.Do("GET", counterNov+want.UserEmail); n != "1" {
					t.Fatalf("counter = %q, want 1", n)
				}
			}
		})
	}
}

func TestUnmeteredEmails(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok-trial", `{"UserEmail":"Trial-AbC@PESTO.teknologiumum.com","MonthlyLimit":1,"Revoked":false}`)
	rs.Do("SET", "tok-vip", `{"UserEmail":"boss@vip.example.com","MonthlyLimit":1,"Revoked":false}`)
	rs.Do("SET", "tok-rev", `{"UserEmail":"trial-x@pesto.teknologiumum.com","MonthlyLimit":1,"Revoked":true}`)

	app, _ := newTestApp(t, rs, nil, endOfMonth) // default pattern
	for i := 0; i < 3; i++ {
		if got := testCall(t, app, "GET", tokenHeader("tok-trial")); got.Status != 200 {
			t.Fatalf("trial call %d: %d %q", i, got.Status, got.Body)
		}
	}
	if got := rs.Do("EXISTS", counterNov+"Trial-AbC@PESTO.teknologiumum.com"); got != "0" {
		t.Fatal("an unmetered call was counted")
	}
	if got := testCall(t, app, "GET", tokenHeader("tok-rev")); got.Status != 401 {
		t.Fatalf("revoked unmetered key: %d", got.Status)
	}
	testCall(t, app, "GET", tokenHeader("tok-vip"))
	if got := testCall(t, app, "GET", tokenHeader("tok-vip")); got.Status != 429 {
		t.Fatalf("vip under the default pattern: %d", got.Status)
	}

	app, _ = newTestApp(t, rs, map[string]string{"UNMETERED_EMAILS": "*@VIP.example.com"}, endOfMonth)
	for i := 0; i < 3; i++ {
		if got := testCall(t, app, "GET", tokenHeader("tok-vip")); got.Status != 200 {
			t.Fatalf("vip call %d under its pattern: %d", i, got.Status)
		}
	}

	app, _ = newTestApp(t, rs, map[string]string{"UNMETERED_EMAILS": ""}, endOfMonth) // meter everyone
	testCall(t, app, "GET", tokenHeader("tok-trial"))
	if got := testCall(t, app, "GET", tokenHeader("tok-trial")); got.Status != 429 {
		t.Fatalf("trial with UNMETERED_EMAILS empty: %d", got.Status)
	}
}

// The counter's TTL is set when it is created and never pushed forward.
func TestCounterTTL(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok", validRecord)
	app, _ := newTestApp(t, rs, nil, endOfMonth)
	testCall(t, app, "GET", tokenHeader("tok"))
	key := counterNov + "jane@example.com"
	if ttl, _ := strconv.Atoi(rs.Do("TTL", key)); ttl < 3456000-60 || ttl > 3456000 {
		t.Fatalf("TTL at creation = %d, want 3456000", ttl)
	}
	rs.Do("EXPIRE", key, "100")
	testCall(t, app, "GET", tokenHeader("tok"))
	if ttl, _ := strconv.Atoi(rs.Do("TTL", key)); ttl > 100 || ttl < 90 {
		t.Fatalf("TTL after another call = %d, want <= 100 (never pushed forward)", ttl)
	}
	if got := rs.Do("GET", key); got != "2" {
		t.Fatalf("counter = %q", got)
	}
}

// A month's counter is its own: a new month starts from zero.
func TestNewMonthNewCounter(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok", `{"UserEmail":"m@example.com","MonthlyLimit":1,"Revoked":false}`)
	nov, _ := newTestApp(t, rs, nil, endOfMonth)
	dec, _ := newTestApp(t, rs, nil, endOfMonth.Add(2*time.Minute))
	if got := testCall(t, nov, "GET", tokenHeader("tok")); got.Status != 200 {
		t.Fatal(got)
	}
	if got := testCall(t, nov, "GET", tokenHeader("tok")); got.Status != 429 {
		t.Fatal(got)
	}
	got := testCall(t, dec, "GET", tokenHeader("tok"))
	if got.Status != 200 || got.Header.Get("RateLimit-Reset") != strconv.Itoa(31*24*3600-60) {
		t.Fatalf("December: %d %v", got.Status, got.Header)
	}
	if rs.Do("GET", "counter/2026-12/m@example.com") != "1" {
		t.Fatal("no December counter")
	}
}

// Requests the HTTP layer rejects get 400 Bad request, never an echo.
func TestRejectedByHTTPLayer(t *testing.T) {
	rs := redistest.Start(t)
	a := startAuth(t, map[string]string{"REDIS_URL": rs.URL})
	for name, req := range map[string]string{
		"control byte in a header": "GET / HTTP/1.1\r\nHost: x\r\nX-Pesto-Token: sec\x01ret\r\n\r\n",
		"NUL in a header":          "GET / HTTP/1.1\r\nHost: x\r\nX-Pesto-Token: sec\x00ret\r\n\r\n",
		"DEL in a header":          "GET / HTTP/1.1\r\nHost: x\r\nX-Pesto-Token: sec\x7fret\r\n\r\n",
		"header without colon":     "GET / HTTP/1.1\r\nHost: x\r\nX-Pesto-Token secret\r\n\r\n",
		"garbage request line":     "secret\r\n\r\n",
		"oversized head":           "GET / HTTP/1.1\r\nHost: x\r\nX-Pesto-Token: " + strings.Repeat("secret", 2000) + "\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			conn, err := net.Dial("tcp", "127.0.0.1:"+a.Port)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Write([]byte(req)); err != nil {
				t.Fatal(err)
			}
			res, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body := make([]byte, 100)
			n, _ := res.Body.Read(body)
			if res.StatusCode != 400 || string(body[:n]) != `{"message":"Bad request"}` {
				t.Fatalf("got %d %q", res.StatusCode, body[:n])
			}
			if res.Header.Get("Allow") != "" {
				t.Errorf("Allow: %q", res.Header.Get("Allow"))
			}
		})
	}
}
