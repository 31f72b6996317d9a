package main

import (
	"testing"
	"time"

	"pesto/shared/redistest"
)

// The structured RateLimit fields of the IETF draft stand beside the legacy
// RateLimit-* headers on a 200 and a 429, their values exactly those of the
// legacy headers and the month's length.
func TestRateLimitFields(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok", `{"UserEmail":"rl@example.com","MonthlyLimit":2,"Revoked":false}`)
	rs.Do("SET", "tok-zero", `{"UserEmail":"zero@example.com","MonthlyLimit":0,"Revoked":false}`)
	app, _ := newTestApp(t, rs, nil, endOfMonth) // November 2026: 30 days, 60 s left

	type fields struct{ limit, remaining, reset, policy, rate, retryAfter string }
	for _, c := range []struct {
		name, token string
		status      int
		want        fields
	}{
		{"first call", "tok", 200, fields{"2", "1", "60", `"monthly";q=2;w=2592000`, `"monthly";r=1;t=60`, ""}},
		{"last call", "tok", 200, fields{"2", "0", "60", `"monthly";q=2;w=2592000`, `"monthly";r=0;t=60`, ""}},
		{"over quota", "tok", 429, fields{"2", "0", "60", `"monthly";q=2;w=2592000`, `"monthly";r=0;t=60`, "60"}},
		{"limit 0", "tok-zero", 429, fields{"0", "0", "60", `"monthly";q=0;w=2592000`, `"monthly";r=0;t=60`, "60"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := testCall(t, app, "GET", tokenHeader(c.token))
			if got.Status != c.status {
				t.Fatalf("status %d, want %d (%s)", got.Status, c.status, got.Body)
			}
			h := got.Header
			gotFields := fields{h.Get("RateLimit-Limit"), h.Get("RateLimit-Remaining"), h.Get("RateLimit-Reset"),
				h.Get("RateLimit-Policy"), h.Get("RateLimit"), h.Get("Retry-After")}
			if gotFields != c.want {
				t.Errorf("got %+v\nwant %+v", gotFields, c.want)
			}
		})
	}
}

func TestMonthOf(t *testing.T) {
	for _, c := range []struct {
		t             time.Time
		reset, window int64
	}{
		{time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), 28 * 86400, 28 * 86400},
		{time.Date(2028, 2, 29, 23, 0, 0, 0, time.UTC), 3600, 29 * 86400},
		{time.Date(2026, 12, 31, 23, 59, 59, 500e6, time.UTC), 1, 31 * 86400},                 // at least 1
		{time.Date(2026, 7, 1, 1, 0, 0, 0, time.FixedZone("CEST", 2*3600)), 3600, 30 * 86400}, // 23:00 UTC on June 30
	} {
		reset, window := monthOf(c.t)
		if reset != c.reset || window != c.window {
			t.Errorf("monthOf(%v) = %d, %d, want %d, %d", c.t, reset, window, c.reset, c.window)
		}
	}
}
