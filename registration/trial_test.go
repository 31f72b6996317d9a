package main

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"pesto/shared/redistest"
)

func TestTrial(t *testing.T) {
	rs := redistest.Start(t)
	base, logs := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "TRIAL_EMAIL_DOMAIN": "trial.example.org"})

	tokenRE := regexp.MustCompile(`^TRIAL-[A-Za-z0-9]{58}$`)
	recordRE := regexp.MustCompile(`^\{"UserEmail":"trial-[A-Za-z0-9]{20}@trial\.example\.org","MonthlyLimit":10,"Revoked":false\}$`)
	seen := map[string]bool{}
	for range 3 {
		r := send(t, "POST", base+"/api/trial", "")
		var v struct{ Token string }
		if err := json.Unmarshal([]byte(r.body), &v); err != nil {
			t.Fatal(err)
		}
		r.want(t, 200, `{"token":"`+v.Token+`"}`)
		if r.header.Get("Content-Type") != "application/json" {
			t.Fatalf("Content-Type %q", r.header.Get("Content-Type"))
		}
		if !tokenRE.MatchString(v.Token) || seen[v.Token] {
			t.Fatalf("token %q: bad shape or repeated", v.Token)
		}
		seen[v.Token] = true
		if rec := rs.Do("GET", v.Token); !recordRE.MatchString(rec) {
			t.Fatalf("record %s", rec)
		}
		if ttl, _ := strconv.Atoi(rs.Do("TTL", v.Token)); ttl < 86399 || ttl > 86400 {
			t.Fatalf("TTL %d, want 86400", ttl)
		}
		if strings.Contains(logs.String(), v.Token) {
			t.Fatal("whole trial key logged")
		}
	}
}

// Every character of [A-Za-z0-9] comes out about equally often.
func TestRandomAlphanumericUnbiased(t *testing.T) {
	const n = 620_000
	s := randomAlphanumeric(n)
	if len(s) != n {
		t.Fatalf("len %d", len(s))
	}
	counts := map[rune]int{}
	for _, r := range s {
		counts[r]++
	}
	if len(counts) != 62 {
		t.Fatalf("%d distinct characters, want 62", len(counts))
	}
	// Expected 10000 each, σ ≈ 99, bounds at 5σ. Folding bytes 248–255
	// onto the first eight characters (b % 62 without rejection) would
	// give those ~12100.
	for r, c := range counts {
		if c < 9500 || c > 10500 {
			t.Errorf("%q appeared %d times, want about 10000", r, c)
		}
		if !strings.ContainsRune(alphanumeric, r) {
			t.Errorf("%q is not alphanumeric", r)
		}
	}
}
