package main

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"pesto/shared/redistest"
	"pesto/shared/wire"
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
		rec := rs.Do("GET", v.Token)
		if !recordRE.MatchString(rec) {
			t.Fatalf("record %s", rec)
		}
		// Its address is one auth and the outbox know as made up.
		if r, err := wire.DecodeTokenRecord(rec); err != nil || !wire.IsTrialEmail(r.UserEmail) {
			t.Fatalf("record %s: not a trial key's made-up address (%v)", rec, err)
		}
		if ttl, _ := strconv.Atoi(rs.Do("TTL", v.Token)); ttl < 86399 || ttl > 86400 {
			t.Fatalf("TTL %d, want 86400", ttl)
		}
		if strings.Contains(logs.String(), v.Token) {
			t.Fatal("whole trial key logged")
		}
	}
}
