package main

import (
	"strings"
	"testing"

	"pesto/shared/redistest"
)

// CORS_ORIGINS opens the public routes to those origins, never the admin ones.
func TestCORS(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "CORS_ORIGINS": "https://pesto.example"})
	plain, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	preflight := func(base, method, path, origin string) response {
		return send(t, "OPTIONS", base+path, "", "Origin", origin,
			"Access-Control-Request-Method", method, "Access-Control-Request-Headers", "content-type")
	}

	for _, path := range []string{"/api/register", "/api/trial"} {
		r := preflight(base, "POST", path, "https://pesto.example")
		if r.status != 204 || r.header.Get("Access-Control-Allow-Origin") != "https://pesto.example" ||
			!strings.Contains(r.header.Get("Access-Control-Allow-Methods"), "POST") {
			t.Fatalf("preflight %s: %d %v", path, r.status, r.header)
		}
		if r := preflight(base, "POST", path, "https://evil.example"); r.header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("other origin allowed on %s: %v", path, r.header)
		}
		if r := preflight(plain, "POST", path, "https://pesto.example"); r.header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("CORS without CORS_ORIGINS on %s: %v", path, r.header)
		}
	}
	r := send(t, "POST", base+"/api/register", `{"name":"a","email":"a@b.co","calls":1}`, "Origin", "https://pesto.example")
	r.want(t, 201, created)
	if r.header.Get("Access-Control-Allow-Origin") != "https://pesto.example" {
		t.Fatalf("no CORS header on the answer: %v", r.header)
	}
	// Error answers carry it too, so the page's script can read them.
	r = send(t, "POST", base+"/api/register", `{}`, "Origin", "https://pesto.example")
	if r.status != 400 || r.header.Get("Access-Control-Allow-Origin") != "https://pesto.example" {
		t.Fatalf("error answer: %d %v", r.status, r.header)
	}

	for _, c := range []struct{ method, path string }{
		{"GET", "/api/pending"}, {"PUT", "/api/approve"}, {"PUT", "/api/revoke"}, {"PUT", "/api/reject"},
	} {
		r := preflight(base, c.method, c.path, "https://pesto.example")
		if r.header.Get("Access-Control-Allow-Origin") != "" || r.header.Get("Access-Control-Allow-Methods") != "" {
			t.Fatalf("admin route %s answers CORS: %d %v", c.path, r.status, r.header)
		}
		r = send(t, c.method, base+c.path, "", "Origin", "https://pesto.example", "Authorization", adminBearer(t, "a"))
		if r.header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("admin route %s answers CORS: %v", c.path, r.header)
		}
	}
}

// Unknown routes and methods get a JSON 404, never a 500 or an echo.
func TestUnknownRoutes(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	send(t, "GET", base+"/nope<script>", "").want(t, 404, `{"message":"Not found"}`)
	send(t, "DELETE", base+"/api/register", "").want(t, 404, `{"message":"Not found"}`)
	send(t, "GET", base+"/api/trial", "").want(t, 404, `{"message":"Not found"}`)
}

func TestMetrics(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "TRIAL_RATE": "1/h"})
	auth := []string{"Authorization", adminBearer(t, "alice")}
	send(t, "POST", base+"/api/register", `{"name":"a","email":"a@b.co","calls":1}`).want(t, 201, created)
	send(t, "POST", base+"/api/register", `{"name":"b","email":"b@b.co","calls":1}`).want(t, 201, created)
	send(t, "POST", base+"/api/register", `{"name":"a","email":"A@b.co","calls":1}`).want(t, 202, accepted)
	send(t, "POST", base+"/api/trial", "")
	send(t, "POST", base+"/api/trial", "").want(t, 429, tooMany)
	tok := tokenOf(t, send(t, "PUT", base+"/api/approve", `{"email":"a@b.co","limit":5}`, auth...))
	send(t, "PUT", base+"/api/revoke", `{"token":"`+tok+`"}`, auth...).want(t, 200, `{"message":"OK"}`)
	send(t, "PUT", base+"/api/reject", `{"email":"b@b.co"}`, auth...).want(t, 200, `{"message":"OK"}`)

	body := send(t, "GET", base+"/metrics", "").body
	for _, line := range []string{
		`pesto_registrations_total{result="created"} 2`,
		`pesto_registrations_total{result="duplicate"} 1`,
		`pesto_trials_total 1`,
		`pesto_rate_limited_total{route="trial"} 1`,
		`pesto_rate_limited_total{route="register"} 0`,
		`pesto_admin_actions_total{action="approve"} 1`,
		`pesto_admin_actions_total{action="revoke"} 1`,
		`pesto_admin_actions_total{action="reject"} 1`,
		`pesto_http_requests_total{route="/api/register",status="201"} 2`,
	} {
		if !strings.Contains(body, "\n"+line+"\n") {
			t.Errorf("metrics lack %q", line)
		}
	}
}
