package main

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"pesto/shared/redistest"
	"pesto/shared/wire"
)

// A POST that a browser sends from another site is refused before anything
// is read or stored (the rate limits' state included); same-site browsers,
// the origins of CORS_ORIGINS and clients that send neither Origin nor
// Sec-Fetch-Site pass.
func TestCrossSite(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL,
		"CORS_ORIGINS": "https://partner.example", "TRUSTED_PROXIES": "127.0.0.1"})
	host := strings.TrimPrefix(base, "http://")
	n := 0
	post := func(path, headers string) string {
		body, ct := "", ""
		if path == "/api/register" {
			n++
			body = "name=Jane&email=jane" + strconv.Itoa(n) + "%40example.com&calls=10"
			ct = "Content-Type: application/x-www-form-urlencoded\r\n"
		}
		return "POST " + path + " HTTP/1.1\r\n" + headers + ct +
			"Content-Length: " + strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body
	}
	forbidden := msgBody("Forbidden")
	for _, c := range []struct {
		name, headers string
		ok            bool
	}{
		{"foreign Origin", "Host: " + host + "\r\nOrigin: https://evil.example\r\n", false},
		{"foreign Origin with our port", "Host: " + host + "\r\nOrigin: http://evil.example:" + strings.Split(host, ":")[1] + "\r\n", false},
		{"Origin null", "Host: " + host + "\r\nOrigin: null\r\n", false},
		{"Origin null, cross-site", "Host: " + host + "\r\nOrigin: null\r\nSec-Fetch-Site: cross-site\r\n", false},
		{"Origin null, same-site", "Host: " + host + "\r\nOrigin: null\r\nSec-Fetch-Site: same-site\r\n", false},
		{"Origin not a URL", "Host: " + host + "\r\nOrigin: ::\r\n", false},
		{"cross-site without Origin", "Host: " + host + "\r\nSec-Fetch-Site: cross-site\r\n", false},
		{"foreign Origin, same-origin Sec-Fetch-Site", "Host: " + host + "\r\nOrigin: https://evil.example\r\nSec-Fetch-Site: same-origin\r\n", false},
		{"neither header (curl)", "Host: " + host + "\r\n", true},
		{"our own origin", "Host: " + host + "\r\nOrigin: " + base + "\r\nSec-Fetch-Site: same-origin\r\n", true},
		{"our own origin, another case", "Host: " + host + "\r\nOrigin: HTTP://" + strings.ToUpper(host) + "\r\n", true},
		{"https page, default port in Host", "Host: pesto.example:443\r\nOrigin: https://pesto.example\r\n", true},
		{"Origin null, same-origin", "Host: " + host + "\r\nOrigin: null\r\nSec-Fetch-Site: same-origin\r\n", true},
		{"same-origin without Origin", "Host: " + host + "\r\nSec-Fetch-Site: same-origin\r\n", true},
		{"user typed it without Origin", "Host: " + host + "\r\nSec-Fetch-Site: none\r\n", true},
		{"an origin of CORS_ORIGINS", "Host: " + host + "\r\nOrigin: https://partner.example\r\n", true},
		{"behind a trusted proxy that renames Host", "Host: registration:3000\r\nX-Forwarded-Host: pesto.example\r\nOrigin: https://pesto.example\r\n", true},
	} {
		for _, path := range []string{"/api/register", "/api/trial"} {
			t.Run(c.name+" "+path, func(t *testing.T) {
				before, listed := keysButGlobalCaps(rs), rs.DoList("LRANGE", wire.WaitingList, "0", "-1")
				status, got := rawHTTP(t, base, post(path, c.headers))
				if !c.ok {
					if status != 403 || got != forbidden {
						t.Fatalf("got %d %s, want 403 %s", status, got, forbidden)
					}
					if after := keysButGlobalCaps(rs); !slices.Equal(after, before) ||
						!slices.Equal(rs.DoList("LRANGE", wire.WaitingList, "0", "-1"), listed) {
						t.Fatalf("stored: keys %v, were %v", after, before)
					}
					return
				}
				if want := map[string]int{"/api/register": 201, "/api/trial": 200}[path]; status != want {
					t.Fatalf("got %d %s, want %d", status, got, want)
				}
			})
		}
	}

	// X-Forwarded-Host is believed from a trusted proxy only.
	base2, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	status, got := rawHTTP(t, base2, post("/api/trial", "Host: registration:3000\r\nX-Forwarded-Host: pesto.example\r\nOrigin: https://pesto.example\r\n"))
	if status != 403 || got != forbidden {
		t.Fatalf("X-Forwarded-Host from an untrusted peer: got %d %s", status, got)
	}
	// CORS_ORIGINS=* lets every origin in.
	base3, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "CORS_ORIGINS": "*"})
	if status, got := rawHTTP(t, base3, post("/api/trial", "Host: x\r\nOrigin: https://evil.example\r\n")); status != 200 {
		t.Fatalf("CORS_ORIGINS=*: got %d %s", status, got)
	}
}

// keysButGlobalCaps is every key but the routes' global rate caps, which
// the tests set so high (1000000/s) that they expire within a millisecond
// or two of the request before: whether one is still there depends on the
// machine's speed.
func keysButGlobalCaps(rs *redistest.Server) []string {
	return slices.DeleteFunc(rs.Keys("*"), func(k string) bool {
		return strings.HasPrefix(k, rateLimitPrefix) && strings.HasSuffix(k, ":all")
	})
}
