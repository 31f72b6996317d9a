package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"pesto/registration/internal/config"
	"pesto/registration/internal/outbox"
	"pesto/registration/internal/smtptest"
	"pesto/shared/redistest"
	"pesto/shared/servicetest"
	"pesto/shared/wire"
)

// Bad and odd input through the running service: every answer is a clear
// 4xx naming the field where one applies (or a success whose stored bytes
// are pinned), never a 500, and a refused request stores nothing.
//
// What these tests pin, beyond the obvious:
//   - Duplicate JSON keys: the last one wins, in every route, and it is the
//     value that is checked that is stored ({"email":"a@x.com","email":"b@x.com"}
//     registers b@x.com). Register matches field names exactly; the admin
//     routes match them ignoring case (so the legacy "UserEmail",
//     "MonthlyLimit", "Token" are read), and "email" wins over "UserEmail".
//   - Names are stored as sent (trimmed), with no Unicode normalisation:
//     NFC "José" and NFD "Jose\u0301" are different bytes, and the 100-character
//     bound counts code points (NFD "é" is two, an emoji with a zero-width
//     joiner three). Format characters (U+202E, U+200D) are not control
//     characters and are kept; the key email shows them escaped in HTML.
//   - Invalid UTF-8 (raw bytes, overlong encodings, lone surrogate escapes)
//     is refused naming the field, in JSON and in forms alike.
//   - A method fiber does not know at all (FOO, PROPFIND) gets 404 JSON like
//     a known method that a route does not take (shared/server routes them
//     to the error handler instead of fiber's bare 501).

func msgBody(m string) string { return `{"message":"` + m + `"}` }

// rawHTTP sends req as is over TCP to the service at base and returns the
// status and body of its answer: for requests an HTTP client refuses to
// write (control bytes in a header, a huge head).
func rawHTTP(t *testing.T, base, req string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no HTTP answer to %.60q: %v", req, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// noData fails the test unless Redis holds no waiting list and no record.
func noData(t *testing.T, rs *redistest.Server) {
	t.Helper()
	if keys := dataKeys(t, rs); len(keys) != 0 {
		t.Fatalf("something was stored: %v (list: %q)", keys, rs.DoList("LRANGE", wire.WaitingList, "0", "-1"))
	}
}

func TestRegisterAbuse(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "MAX_BODY_BYTES": "65536"})
	jsonCT := []string{"Content-Type", "application/json"}
	formCT := []string{"Content-Type", "application/x-www-form-urlencoded"}
	signup := func(name string) string { return `{"name":"` + name + `","email":"a@b.co","calls":1}` }
	stored := func(name string) string { return `{"name":"` + name + `","email":"a@b.co","building":"","calls":1}` }
	nest := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	for _, c := range []struct {
		name, body string
		headers    []string
		status     int
		want       string // the answer's body
		stored     string // the list element stored on success
	}{
		// Control bytes never get in, so they can never reach an email header.
		{"name CR LF header", signup(`Jane\r\nBcc: evil@example.net`), jsonCT, 400, msgBody(msgNameControl), ""},
		{"name NUL", signup(`a\u0000b`), jsonCT, 400, msgBody(msgNameControl), ""},
		{"name DEL", signup("a\x7fb"), jsonCT, 400, msgBody(msgNameControl), ""},
		{"name NEL (C1)", signup("a\u0085b"), jsonCT, 400, msgBody(msgNameControl), ""},
		{"name tab", signup(`a\tb`), jsonCT, 400, msgBody(msgNameControl), ""},
		{"name raw LF byte", signup("a\nb"), jsonCT, 400, msgBody("Invalid JSON body"), ""},
		{"name CR LF around is trimmed", signup(`\r\n Jane \r\n`), jsonCT, 201, msgBody("Created"), stored("Jane")},
		{"email CR LF header", `{"name":"a","email":"a@b.co\r\nBcc: evil@example.net","calls":1}`, jsonCT, 400, msgBody(msgEmail), ""},
		{"email LF", `{"name":"a","email":"a@b.co\nx","calls":1}`, jsonCT, 400, msgBody(msgEmail), ""},
		{"email NUL", `{"name":"a","email":"a\u0000@b.co","calls":1}`, jsonCT, 400, msgBody(msgEmail), ""},
		{"email two addresses", `{"name":"a","email":"a@b.co,evil@example.net","calls":1}`, jsonCT, 400, msgBody(msgEmail), ""},
		{"form name CR LF", "name=Jane%0D%0ABcc%3A+evil%40example.net&email=a%40b.co&calls=1", formCT, 400, msgBody(msgNameControl), ""},
		{"form name raw CR LF", "name=Jane\r\nBcc: x&email=a%40b.co&calls=1", formCT, 400, msgBody(msgNameControl), ""},
		{"form email CR LF", "name=a&email=a%40b.co%0D%0ABcc%3A+evil%40example.net&calls=1", formCT, 400, msgBody(msgEmail), ""},

		// Unicode.
		{"NFC name", signup("José"), jsonCT, 201, msgBody("Created"), stored("José")},
		{"NFD name", signup("Jose\u0301"), jsonCT, 201, msgBody("Created"), stored("Jose\u0301")},
		{"100 code points NFD", signup(strings.Repeat("e\u0301", 50)), jsonCT, 201, msgBody("Created"), stored(strings.Repeat("e\u0301", 50))},
		{"102 code points NFD", signup(strings.Repeat("e\u0301", 51)), jsonCT, 400, msgBody(msgName), ""},
		{"100 letters", signup(strings.Repeat("a", 100)), jsonCT, 201, msgBody("Created"), stored(strings.Repeat("a", 100))},
		{"101 letters", signup(strings.Repeat("a", 101)), jsonCT, 400, msgBody(msgName), ""},
		{"101 letters in a form", "name=" + strings.Repeat("a", 101) + "&email=a%40b.co&calls=1", formCT, 400, msgBody(msgName), ""},
		{"99 code points of ZWJ emoji", signup(strings.Repeat("👩‍💻", 33)), jsonCT, 201, msgBody("Created"), stored(strings.Repeat("👩‍💻", 33))},
		{"102 code points of ZWJ emoji", signup(strings.Repeat("👩‍💻", 34)), jsonCT, 400, msgBody(msgName), ""},
		{"RTL override", signup("\u202eevil"), jsonCT, 201, msgBody("Created"), stored("\u202eevil")},
		{"zero-width joiner", signup("a\u200db"), jsonCT, 201, msgBody("Created"), stored("a\u200db")},
		{"line separator", signup("a\u2028b"), jsonCT, 201, msgBody("Created"), stored(`a\u2028b`)},
		{"surrogate pair escape", signup(`\ud83d\ude00`), jsonCT, 201, msgBody("Created"), stored("😀")},
		{"U+FFFD sent as such", signup(`\ufffd`), jsonCT, 201, msgBody("Created"), stored("\ufffd")},
		{"lone surrogate escape", signup(`a\ud800b`), jsonCT, 400, msgBody(msgNameUTF8), ""},
		{"invalid UTF-8 in name", signup("a\xffb"), jsonCT, 400, msgBody(msgNameUTF8), ""},
		{"overlong '/' in name", signup("a\xc0\xafb"), jsonCT, 400, msgBody(msgNameUTF8), ""},
		{"invalid UTF-8 in email", "{\"name\":\"a\",\"email\":\"a\xff@b.co\",\"calls\":1}", jsonCT, 400, msgBody(msgEmail), ""},
		{"invalid UTF-8 in building", "{\"name\":\"a\",\"email\":\"a@b.co\",\"building\":\"\xfe\",\"calls\":1}", jsonCT, 400, msgBody(msgBuildingUTF8), ""},
		{"invalid UTF-8 in an unknown field", "{\"name\":\"a\",\"email\":\"a@b.co\",\"calls\":1,\"x\":\"\xff\"}", jsonCT, 201, msgBody("Created"), stored("a")},
		{"form overlong escaped", "name=a%C0%AFb&email=a%40b.co&calls=1", formCT, 400, msgBody(msgNameUTF8), ""},
		{"form overlong raw", "name=a\xc0\xafb&email=a%40b.co&calls=1", formCT, 400, msgBody(msgNameUTF8), ""},
		{"form invalid email", "name=a&email=a%FF%40b.co&calls=1", formCT, 400, msgBody(msgEmail), ""},
		{"form invalid building", "name=a&email=a%40b.co&building=%FF&calls=1", formCT, 400, msgBody(msgBuildingUTF8), ""},

		// JSON shape.
		{"duplicate email: last wins", `{"name":"a","email":"a@x.com","email":"b@x.com","calls":1}`, jsonCT, 201, msgBody("Created"),
			`{"name":"a","email":"b@x.com","building":"","calls":1}`},
		{"duplicate calls: the last is checked", `{"name":"a","email":"a@b.co","calls":1,"calls":"x"}`, jsonCT, 400, msgBody(msgCalls), ""},
		{"field names are exact", `{"Name":"a","email":"a@b.co","calls":1}`, jsonCT, 400, msgBody(msgName), ""},
		{"10,000 levels in a field", `{"name":"a","email":"a@b.co","calls":1,"x":` + nest(10000) + `}`, jsonCT, 400, msgBody("Invalid JSON body"), ""},
		{"60,000 levels unclosed", `{"x":` + strings.Repeat("[", 60000), jsonCT, 400, msgBody("Invalid JSON body"), ""},
		{"10,000 levels as the body", nest(10000), jsonCT, 400, msgBody("Invalid JSON body"), ""},
		{"calls 1e309", `{"name":"a","email":"a@b.co","calls":1e309}`, jsonCT, 400, msgBody(msgCalls), ""},
		{"calls 20 digits", `{"name":"a","email":"a@b.co","calls":99999999999999999999}`, jsonCT, 400, msgBody(msgCalls), ""},
		{"calls 5000 digits", `{"name":"a","email":"a@b.co","calls":` + strings.Repeat("9", 5000) + `}`, jsonCT, 400, msgBody(msgCalls), ""},
		{"calls -0", `{"name":"a","email":"a@b.co","calls":-0}`, jsonCT, 400, msgBody(msgCalls), ""},
		{"calls 1.0", `{"name":"a","email":"a@b.co","calls":1.0}`, jsonCT, 400, msgBody(msgCalls), ""},
		{"calls 1e3", `{"name":"a","email":"a@b.co","calls":1e3}`, jsonCT, 400, msgBody(msgCalls), ""},
		{"calls string", `{"name":"a","email":"a@b.co","calls":"5"}`, jsonCT, 400, msgBody(msgCalls), ""},
		{"calls leading zero", `{"name":"a","email":"a@b.co","calls":07}`, jsonCT, 400, msgBody("Invalid JSON body"), ""},
		{"calls true", `{"name":"a","email":"a@b.co","calls":true}`, jsonCT, 400, msgBody(msgCalls), ""},
		{"trailing garbage", signup("a") + `x`, jsonCT, 400, msgBody("Invalid JSON body"), ""},
		{"two objects", signup("a") + signup("b"), jsonCT, 400, msgBody("Invalid JSON body"), ""},
		{"trailing white space", signup("a") + " \r\n\t", jsonCT, 201, msgBody("Created"), stored("a")},
		{"BOM", "\xef\xbb\xbf" + signup("a"), jsonCT, 400, msgBody("Invalid JSON body"), ""},
		{"only white space", " \r\n\t ", jsonCT, 400, msgBody("Invalid JSON body"), ""},
		{"NUL byte after the object", signup("a") + "\x00", jsonCT, 400, msgBody("Invalid JSON body"), ""},

		// Content types.
		{"JSON upper case with charset", signup("a"), []string{"Content-Type", "application/JSON; charset=utf-8"}, 201, msgBody("Created"), stored("a")},
		{"JSON odd parameters", signup("a"), []string{"Content-Type", `APPLICATION/json ;charset="UTF-8"; x=y`}, 201, msgBody("Created"), stored("a")},
		{"form with a charset", "name=a&email=a%40b.co&calls=1", []string{"Content-Type", "Application/X-WWW-Form-Urlencoded; charset=UTF-8"}, 201, msgBody("Created"), stored("a")},
		{"JSON suffix type", signup("a"), []string{"Content-Type", "application/merge-patch+json"}, 415, msgBody("Unsupported content type"), ""},
		{"text/json", signup("a"), []string{"Content-Type", "text/json"}, 415, msgBody("Unsupported content type"), ""},
		{"no Content-Type", signup("a"), []string{"Content-Type", ""}, 415, msgBody("Unsupported content type"), ""},
		{"multipart", "--b\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\na\r\n--b--\r\n", []string{"Content-Type", "multipart/form-data; boundary=b"}, 415, msgBody("Unsupported content type"), ""},
		{"body over MAX_BODY_BYTES", signup(strings.Repeat("a", 70000)), jsonCT, 413, msgBody("Request body too large"), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer rs.Do("DEL", wire.WaitingList) // each case on its own
			start := time.Now()
			r := send(t, "POST", base+"/api/register", c.body, c.headers...)
			if d := time.Since(start); d > time.Second {
				t.Errorf("took %v", d)
			}
			r.want(t, c.status, c.want)
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if c.stored == "" {
				noData(t, rs)
				return
			}
			if got := rs.DoList("LRANGE", wire.WaitingList, "0", "-1"); len(got) != 1 || got[0] != c.stored {
				t.Fatalf("stored %q\nwant   %q", got, c.stored)
			}
		})
	}
}

// The HTTP layer's refusals: 400 {"message":"Bad request"} (413 for a
// body), never a 500, and routes answer only their own methods.
func TestHTTPLayerAbuse(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	auth := "Authorization: " + adminBearer(t, "alice") + "\r\n"
	big := strings.Repeat("x", 9000)
	body := `{"name":"a","email":"a@b.co","calls":1}`
	post := func(headers string) string {
		return "POST /api/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + headers +
			"Content-Length: " + fmt.Sprint(len(body)) + "\r\nConnection: close\r\n\r\n" + body
	}
	for _, c := range []struct {
		name, req string
		status    int
		want      string
	}{
		{"head over 8 KiB", post("X-Big: " + big + "\r\n"), 400, msgBody("Bad request")},
		{"many headers over 8 KiB", post(strings.Repeat("X-A: "+strings.Repeat("y", 90)+"\r\n", 100)), 400, msgBody("Bad request")},
		{"URL over 8 KiB", "GET /" + big + " HTTP/1.1\r\nHost: x\r\n\r\n", 400, msgBody("Bad request")},
		{"control byte in a header", post("X-Bad: a\x01b\r\n"), 400, msgBody("Bad request")},
		{"bare CR in a header", post("X-Bad: a\rb\r\n"), 400, msgBody("Bad request")},
		{"negative Content-Length", "POST /api/register HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, msgBody("Bad request")},
		{"huge Content-Length", "POST /api/register HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", 400, msgBody("Bad request")},
		{"body over the limit", "POST /api/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n" +
			strings.Repeat("x", 100000), 413, msgBody("Request body too large")},
		{"declared body over the read limit, not sent", "POST /api/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000000\r\n\r\n", 413, msgBody("Request body too large")},
		{"chunked body over the limit", "POST /api/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5000\r\n" +
			strings.Repeat("x", 0x5000) + "\r\n0\r\n\r\n", 413, msgBody("Request body too large")},
		{"admin head over 8 KiB", "PUT /api/approve HTTP/1.1\r\nHost: x\r\n" + auth + "X-Big: " + big + "\r\n\r\n", 400, msgBody("Bad request")},
		{"unknown method", "FOO /api/register HTTP/1.1\r\nHost: x\r\n\r\n", 404, msgBody("Not found")},
		{"WebDAV method", "PROPFIND / HTTP/1.1\r\nHost: x\r\n\r\n", 404, msgBody("Not found")},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, got := rawHTTP(t, base, c.req)
			if status != c.status || got != c.want {
				t.Fatalf("got %d %s\nwant %d %s", status, got, c.status, c.want)
			}
			noData(t, rs)
		})
	}

	// Every route answers only its own method; the others are 404 JSON,
	// with or without an admin token.
	for _, c := range []struct{ method, path string }{
		{"GET", "/api/register"}, {"PUT", "/api/register"}, {"DELETE", "/api/register"}, {"PATCH", "/api/register"},
		{"OPTIONS", "/api/register"}, {"GET", "/api/trial"}, {"PUT", "/api/trial"}, {"POST", "/api/pending"},
		{"DELETE", "/api/pending"}, {"POST", "/api/approve"}, {"GET", "/api/approve"}, {"PATCH", "/api/revoke"},
		{"DELETE", "/api/reject"}, {"POST", "/"}, {"TRACE", "/"}, {"CONNECT", "/api/register"},
	} {
		for _, h := range [][]string{nil, {"Authorization", adminBearer(t, "alice")}} {
			send(t, c.method, base+c.path, body, h...).want(t, 404, msgBody("Not found"))
		}
	}
	if r := send(t, "HEAD", base+"/api/register", ""); r.status != 404 || r.body != "" {
		t.Fatalf("HEAD: %d %q", r.status, r.body)
	}
	noData(t, rs)
}

func TestAdminAbuse(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "MAX_BODY_BYTES": "65536"})
	auth := []string{"Authorization", adminBearer(t, "alice")}
	jsonCT := []string{"Content-Type", "application/json"}
	const listed = `{"name":"J","email":"j@example.com","building":"","calls":1}`
	const legacyCRLF = `{"name":"E","email":"eve@example.com\r\nBcc: evil@example.net","building":"","calls":1}`
	rs.Do("RPUSH", wire.WaitingList, listed, legacyCRLF)
	notListed := msgBody("Email does not exists")
	nest := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	for _, c := range []struct {
		route, body string
		headers     []string
		status      int
		want        string
	}{
		// An address that cannot be mailed cannot be approved.
		{"approve", `{"email":"eve@example.com\r\nBcc: evil@example.net","limit":1}`, jsonCT, 400, msgBody(msgEmail)},
		{"approve", `{"email":"no-at-sign","limit":1}`, jsonCT, 400, msgBody(msgEmail)},
		{"approve", `{"email":"Jane <j@example.com>","limit":1}`, jsonCT, 400, msgBody(msgEmail)},
		{"approve", `{"email":"j\u0000@example.com","limit":1}`, jsonCT, 400, msgBody(msgEmail)},
		// Read as U+FFFD, a symbol: no local part of an address to mail.
		{"approve", "{\"email\":\"j\xff@example.com\",\"limit\":1}", jsonCT, 400, msgBody(msgLookalike)},
		{"approve", `{"email":"` + strings.Repeat("a", 250) + `@b.co","limit":1}`, jsonCT, 400, msgBody(msgEmailLength)},
		{"approve", `{"email":"j@example.com","limit":1e309}`, jsonCT, 400, msgBody(msgLimit)},
		{"approve", `{"email":"j@example.com","limit":99999999999999999999}`, jsonCT, 400, msgBody(msgLimit)},
		{"approve", `{"email":"j@example.com","limit":-0}`, jsonCT, 400, msgBody(msgLimit)},
		{"approve", `{"email":"j@example.com","limit":1.0}`, jsonCT, 400, msgBody(msgLimit)},
		{"approve", `{"email":"j@example.com","limit":1e3}`, jsonCT, 400, msgBody(msgLimit)},
		{"approve", `{"email":"j@example.com","limit":"5"}`, jsonCT, 400, msgBody(msgLimit)},
		{"approve", `{"email":"j@example.com","limit":[1]}`, jsonCT, 400, msgBody(msgLimit)},
		{"approve", `{"email":"j@example.com","limit":1,"token":"a\u0000b"}`, jsonCT, 400, msgBody(msgToken)},
		{"approve", `{"email":"j@example.com","limit":1,"token":"a\r\nb"}`, jsonCT, 400, msgBody(msgToken)},
		{"approve", `{"email":"j@example.com","limit":1,"token":"ключ"}`, jsonCT, 400, msgBody(msgToken)},
		{"approve", `{"email":"j@example.com","limit":1,"token":"` + strings.Repeat("k", 10000) + `"}`, jsonCT, 400, msgBody(msgToken)},
		// Duplicate keys: the last wins; "email" wins over "UserEmail";
		// names match ignoring case.
		{"approve", `{"email":"j@example.com","email":"nobody@example.com","limit":1}`, jsonCT, 400, notListed},
		{"approve", `{"email":"nobody@example.com","UserEmail":"j@example.com","limit":1}`, jsonCT, 400, notListed},
		{"approve", `{"EMAIL":"nobody@example.com","LIMIT":1}`, jsonCT, 400, notListed},
		{"approve", `{"email":"j@example.com","limit":1,"limit":0}`, jsonCT, 400, msgBody(msgLimit)},
		{"approve", `{"email":"j@example.com","limit":1,"x":` + nest + `}`, jsonCT, 400, msgBody("Invalid JSON body")},
		{"approve", nest, jsonCT, 400, msgBody("Invalid JSON body")},
		{"approve", `{"email":"j@example.com","limit":1}x`, jsonCT, 400, msgBody("Invalid JSON body")},
		{"approve", "\xef\xbb\xbf" + `{"email":"j@example.com","limit":1}`, jsonCT, 400, msgBody("Invalid JSON body")},
		{"approve", "  \r\n ", jsonCT, 400, msgBody("Invalid JSON body")},
		{"approve", `{"email":"nobody@example.com","limit":1}`, []string{"Content-Type", "Application/JSON; Charset=UTF-8"}, 400, notListed},
		{"approve", "--b\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nj@example.com\r\n--b--\r\n", []string{"Content-Type", "multipart/form-data; boundary=b"}, 415, msgBody("Unsupported content type")},
		{"approve", `{"email":"j@example.com","limit":1,"x":"` + strings.Repeat("x", 70000) + `"}`, jsonCT, 413, msgBody("Request body too large")},
		{"revoke", `{"token":"a\r\nb"}`, jsonCT, 400, msgBody("User does not exists")},
		{"revoke", `{"token":"` + strings.Repeat("k", 10000) + `"}`, jsonCT, 400, msgBody("User does not exists")},
		{"revoke", `{"token":"waiting-list"}`, jsonCT, 400, msgBody("User does not exists")},
		{"revoke", `{"token":"x","token":7}`, jsonCT, 400, msgBody(msgTokenType)},
		{"revoke", "\xef\xbb\xbf{}", jsonCT, 400, msgBody("Invalid JSON body")},
		{"reject", `{"email":"j@example.com\r\n"}x`, jsonCT, 400, msgBody("Invalid JSON body")},
		{"reject", `{"email":"nobody@example.com\r\nBcc: x@y.z"}`, jsonCT, 400, notListed},
		{"reject", `{"email":["j@example.com"]}`, jsonCT, 400, msgBody(msgEmailType)},
		{"reject", `{"email":"` + strings.Repeat("a", 300) + `"}`, jsonCT, 400, msgBody(msgEmailLength)},
	} {
		t.Run(c.route+" "+strings.ToValidUTF8(c.body[:min(len(c.body), 50)], "?"), func(t *testing.T) {
			start := time.Now()
			send(t, "PUT", base+"/api/"+c.route, c.body, append(auth, c.headers...)...).want(t, c.status, c.want)
			if d := time.Since(start); d > time.Second {
				t.Errorf("took %v", d)
			}
			if got := fmt.Sprint(dataKeys(t, rs)); got != "[waiting-list]" {
				t.Fatalf("keys %s: something was stored", got)
			}
			if got := rs.DoList("LRANGE", wire.WaitingList, "0", "-1"); len(got) != 2 || got[0] != listed || got[1] != legacyCRLF {
				t.Fatalf("waiting list changed: %q", got)
			}
		})
	}
	// The legacy signup with a line break in its email can be rejected by
	// that exact text; no email is queued.
	send(t, "PUT", base+"/api/reject", `{"email":"EVE@example.com\r\nBcc: evil@example.net"}`, auth...).want(t, 200, msgBody("OK"))
	if got := rs.DoList("LRANGE", wire.WaitingList, "0", "-1"); len(got) != 1 || got[0] != listed {
		t.Fatalf("waiting list %q", got)
	}
	if n := len(outboxEntries(t, rs)); n != 0 {
		t.Fatalf("%d emails queued", n)
	}
}

// Names with line breaks, NUL, NEL, line separators or encoded-word
// lookalikes, as a legacy service may have stored them, never reach an
// email header as anything but the To display name, encoded: the received
// message has exactly the expected headers, one recipient, and no injected
// one.
func TestKeyEmailHeaderInjection(t *testing.T) {
	rs := redistest.Start(t)
	srv := smtptest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "SMTP_URL": srv.URL("tls=none")})
	names := []string{
		`Eve\r\nBcc: evil@example.net`,
		`Eve\nTo: evil@example.net\n\nbody`,
		`Eve\rSubject: free keys`,
		`Eve\u0000Cc: evil@example.net`,
		`Eve\u0085Bcc: evil@example.net`,
		`Eve\u2028Bcc: evil@example.net`,
		`=?utf-8?q?Eve=0D=0ABcc=3A_evil=40example=2Enet?=`,
		`Eve <evil@example.net>, \"x\" <y@example.net>`,
		`\u202eEve`,
	}
	for i, n := range names {
		rs.Do("RPUSH", wire.WaitingList, fmt.Sprintf(`{"name":"%s","email":"eve%d@example.com","building":"","calls":1}`, n, i))
	}
	for i := range names {
		approveToken(t, base, fmt.Sprintf(`{"email":"eve%d@example.com","limit":1}`, i))
	}
	got := srv.WaitReceived(t, len(names), 10*time.Second)
	servicetest.Poll(t, 5*time.Second, "the outbox is empty", func() bool { return rs.Do("XLEN", outbox.Stream) == "0" })
	allowed := map[string]bool{"From": true, "To": true, "Subject": true, "Message-Id": true, "Date": true,
		"Mime-Version": true, "Content-Type": true, "User-Agent": true, "X-Mailer": true}
	for _, m := range srv.Received() {
		var i int
		if _, err := fmt.Sscanf(m.To, "eve%d@example.com", &i); err != nil || i < 0 || i >= len(names) {
			t.Fatalf("envelope recipient %q", m.To)
		}
		p := smtptest.ParseMail(t, m.Data)
		for k := range p.Header {
			if !allowed[k] {
				t.Errorf("name %q: header %q in\n%s", names[i], k, p.RawHeader)
			}
		}
		for _, line := range strings.Split(strings.TrimSuffix(p.RawHeader, "\r\n"), "\r\n") {
			if strings.ContainsAny(line, "\r\n\x00") {
				t.Errorf("name %q: bare CR, LF or NUL in header line %q", names[i], line)
			}
		}
		to, err := p.Header.AddressList("To")
		if err != nil || len(to) != 1 || to[0].Address != m.To {
			t.Errorf("name %q: To %q (%v), want only %s", names[i], p.Header.Get("To"), err, m.To)
		}
		if s := p.Header.Get("Subject"); s != config.DefaultMailSubject {
			t.Errorf("name %q: Subject %q", names[i], s)
		}
		if strings.Contains(p.HTML, "<evil") || strings.Contains(p.HTML, "<y@") {
			t.Errorf("name %q: unescaped in the HTML part", names[i])
		}
	}
	if len(got) != len(names) || len(srv.Received()) != len(names) {
		t.Errorf("%d emails received, want %d", len(srv.Received()), len(names))
	}
}
