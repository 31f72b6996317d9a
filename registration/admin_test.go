package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"pesto/registration/internal/outbox"
	"pesto/registration/internal/waitlist"
	"pesto/shared/redistest"
)

// pendingCount is the number of outbox entries read by the group and not
// acknowledged.
func pendingCount(t testing.TB, rs *redistest.Server) int64 {
	t.Helper()
	count, _, _ := strings.Cut(rs.Do("XPENDING", outbox.Stream, outbox.Group), "\n") // XPENDING's summary: the count first
	n, err := strconv.ParseInt(count, 10, 64)
	if err != nil {
		t.Fatalf("XPENDING: %q", count)
	}
	return n
}

// outboxEntries returns the fields of every entry of the outbox stream.
func outboxEntries(t testing.TB, rs *redistest.Server) []map[string]string {
	t.Helper()
	c := rs.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	entries, err := c.Do(ctx, c.B().Xrange().Key(outbox.Stream).Start("-").End("+").Build()).AsXRange()
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]string
	for _, e := range entries {
		out = append(out, e.FieldValues)
	}
	return out
}

// dataKeys returns the keys in Redis other than the outbox streams (which
// the outbox worker creates on start), the index of the waiting list
// (derived from the list; waitinglist_test.go checks it) and rate limits,
// sorted.
func dataKeys(t testing.TB, rs *redistest.Server) []string {
	t.Helper()
	return slices.DeleteFunc(rs.Keys("*"), func(k string) bool {
		return k == outbox.Stream || k == outbox.Dead || k == waitlist.PeopleKey || k == waitlist.PeopleMoreKey || k == waitlist.PeopleSeenKey ||
			strings.HasPrefix(k, rateLimitPrefix)
	})
}

var approvedToken = regexp.MustCompile(`^[A-Za-z0-9]{64}$`)

// tokenOf returns the token of an approve's 200 answer.
func tokenOf(t testing.TB, r response) string {
	t.Helper()
	var v struct{ Message, Token string }
	if r.status != 200 || json.Unmarshal([]byte(r.body), &v) != nil || v.Message != "OK" ||
		r.body != `{"message":"OK","token":"`+v.Token+`"}` {
		t.Fatalf("approve: got %d %s", r.status, r.body)
	}
	return v.Token
}

func TestApprove(t *testing.T) {
	rs := redistest.Start(t)
	base, logs := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	auth := []string{"Authorization", adminBearer(t, "alice")}
	approve := func(body string) response { return send(t, "PUT", base+"/api/approve", body, auth...) }

	rs.Do("RPUSH", "waiting-list", `{"name":"Old","email":"old@example.com","building":"","calls":1}`)
	rs.Do("RPUSH", "waiting-list", `{"name":"Jane <b>","email":" Jane@Example.com ","building":null,"calls":5}`)
	rs.Do("RPUSH", "waiting-list", `{"name":"Last","email":"last@example.com","building":"","calls":1}`)

	// Generated token, email matched ignoring case and spaces.
	token := tokenOf(t, approve(`{"email":"jane@example.COM","limit":100}`))
	if !approvedToken.MatchString(token) {
		t.Fatalf("generated token %q is not 64 [A-Za-z0-9]", token)
	}
	if got, want := rs.Do("GET", token), `{"UserEmail":"Jane@Example.com","MonthlyLimit":100,"Revoked":false}`; got != want {
		t.Fatalf("record %s\nwant   %s", got, want)
	}
	if got := rs.Do("TTL", token); got != "-1" {
		t.Fatalf("TTL = %s, want -1", got)
	}
	if got, want := rs.Do("LINDEX", "waiting-list", "0")+"|"+rs.Do("LINDEX", "waiting-list", "1")+"|"+rs.Do("LLEN", "waiting-list"),
		`{"name":"Old","email":"old@example.com","building":"","calls":1}|{"name":"Last","email":"last@example.com","building":"","calls":1}|2`; got != want {
		t.Fatalf("list %s", got)
	}
	entries := outboxEntries(t, rs)
	if got, want := fmt.Sprint(entries), fmt.Sprint([]map[string]string{{"to": "Jane@Example.com", "name": "Jane <b>", "token": token, "limit": "100"}}); got != want {
		t.Fatalf("outbox %s\nwant   %s", got, want)
	}
	if rs.Do("EXISTS", waitlist.ApprovingKey("jane@example.com")) != "0" {
		t.Fatal("approving key left behind")
	}
	if l := logs.String(); !strings.Contains(l, `"admin":"alice"`) || strings.Contains(l, token) {
		t.Fatal("approve not logged with the admin, or the whole key logged")
	}

	// Admin-supplied token, legacy PascalCase body.
	tokenOf(t, approve(`{"UserEmail":"old@example.com","MonthlyLimit":7,"Token":"legacy-key-1"}`))
	if got, want := rs.Do("GET", "legacy-key-1"), `{"UserEmail":"old@example.com","MonthlyLimit":7,"Revoked":false}`; got != want {
		t.Fatalf("record %s, want %s", got, want)
	}

	// A key with a rate of its own: the record's Rate field, last.
	rs.Do("RPUSH", "waiting-list", `{"name":"Rated","email":"rated@example.com","building":"","calls":1}`)
	rs.Do("RPUSH", "waiting-list", `{"name":"Free","email":"free@example.com","building":"","calls":1}`)
	for _, c := range []struct{ body, want string }{
		{`{"email":"rated@example.com","limit":9,"token":"rated-key","rate":"600/m;burst=100"}`,
			`{"UserEmail":"rated@example.com","MonthlyLimit":9,"Revoked":false,"Rate":"600/m;burst=100"}`},
		{`{"email":"free@example.com","limit":9,"token":"free-key","rate":"off"}`,
			`{"UserEmail":"free@example.com","MonthlyLimit":9,"Revoked":false,"Rate":"off"}`},
	} {
		tokenOf(t, approve(c.body))
		key := c.body[strings.Index(c.body, `"token":"`)+9 : strings.Index(c.body, `","rate"`)]
		if got := rs.Do("GET", key); got != c.want {
			t.Fatalf("record %s\nwant   %s", got, c.want)
		}
	}
	if l := logs.String(); !strings.Contains(l, `"rate":"600/m;burst=100"`) {
		t.Error("the rate is not logged with the approval")
	}

	// Repeating an approve: the token exists (checked first).
	approve(`{"UserEmail":"old@example.com","MonthlyLimit":7,"Token":"legacy-key-1"}`).
		want(t, 400, `{"message":"Token already exists"}`)
	approve(`{"email":"nobody@example.com","limit":7,"token":"legacy-key-1"}`).
		want(t, 400, `{"message":"Token already exists"}`)
	approve(`{"email":"jane@example.com","limit":100}`).want(t, 400, `{"message":"Email does not exists"}`)
	approve(`{"email":"nobody@example.com","limit":1,"token":"fresh"}`).want(t, 400, `{"message":"Email does not exists"}`)
	if n := len(outboxEntries(t, rs)); n != 4 {
		t.Fatalf("%d outbox entries, want 4", n)
	}
	if rs.Do("EXISTS", "fresh") != "0" {
		t.Fatal("a record was written for an unlisted email")
	}
}

func TestApproveValidation(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "MAX_BODY_BYTES": "1024"})
	auth := []string{"Authorization", adminBearer(t, "alice")}
	rs.Do("RPUSH", "waiting-list", `{"name":"J","email":"j@example.com","building":"","calls":1}`)
	msg := func(m string) string { return `{"message":"` + m + `"}` }
	for _, c := range []struct {
		route, body string
		headers     []string
		status      int
		want        string
	}{
		{"approve", `{"limit":1}`, nil, 400, msg(msgApproveEmail)},
		{"approve", `{"email":"  ","limit":1}`, nil, 400, msg(msgApproveEmail)},
		{"approve", `{"email":5,"limit":1}`, nil, 400, msg(msgEmailType)},
		{"approve", `{"email":"j@example.com"}`, nil, 400, msg(msgLimitMissing)},
		{"approve", `{"email":"j@example.com","limit":0}`, nil, 400, msg(msgLimit)},
		{"approve", `{"email":"j@example.com","limit":-3}`, nil, 400, msg(msgLimit)},
		{"approve", `{"email":"j@example.com","limit":1.5}`, nil, 400, msg(msgLimit)},
		{"approve", `{"email":"j@example.com","limit":"10"}`, nil, 400, msg(msgLimit)},
		{"approve", `{"email":"j@example.com","limit":99999999999999999999}`, nil, 400, msg(msgLimit)},
		{"approve", `{"email":"j@example.com","limit":1,"token":""}`, nil, 400, msg(msgToken)},
		{"approve", `{"email":"j@example.com","limit":1,"token":"has space"}`, nil, 400, msg(msgToken)},
		{"approve", `{"email":"j@example.com","limit":1,"token":"waiting-list"}`, nil, 400, msg(msgToken)},
		{"approve", `{"email":"j@example.com","limit":1,"token":"counter/2026-01/x"}`, nil, 400, msg(msgToken)},
		{"approve", `{"email":"j@example.com","limit":1,"token":"pesto:x"}`, nil, 400, msg(msgToken)},
		{"approve", `{"email":"j@example.com","limit":1,"token":"` + strings.Repeat("k", 257) + `"}`, nil, 400, msg(msgToken)},
		{"approve", `{"email":"j@example.com","limit":1,"token":7}`, nil, 400, msg(msgTokenType)},
		{"approve", `{"email":"j@example.com","limit":1,"rate":10}`, nil, 400, msg(msgRate)},
		{"approve", `{"email":"j@example.com","limit":1,"rate":""}`, nil, 400, msg(msgRate)},
		{"approve", `{"email":"j@example.com","limit":1,"rate":"fast"}`, nil, 400, msg(msgRate)},
		{"approve", `{"email":"j@example.com","limit":1,"rate":"10/h"}`, nil, 400, msg(msgRate)},
		{"approve", `{"email":"j@example.com","limit":1,"rate":"10/s;burst=11"}`, nil, 400, msg(msgRate)},
		{"approve", `{"email":"j@example.com","limit":1,"rate":"1000001/m"}`, nil, 400, msg(msgRate)},
		{"approve", `{"email":"j@example.com","limit":1,"expires_in":60,"expires_at":"2099-01-01T00:00:00Z"}`, nil, 400, msg(msgExpiresBoth)},
		{"approve", `{"email":"j@example.com","limit":1,"expires_in":0}`, nil, 400, msg(msgExpiresIn)},
		{"approve", `{"email":"j@example.com","limit":1,"expires_in":-60}`, nil, 400, msg(msgExpiresIn)},
		{"approve", `{"email":"j@example.com","limit":1,"expires_in":1.5}`, nil, 400, msg(msgExpiresIn)},
		{"approve", `{"email":"j@example.com","limit":1,"expires_in":1e3}`, nil, 400, msg(msgExpiresIn)},
		{"approve", `{"email":"j@example.com","limit":1,"expires_in":"60"}`, nil, 400, msg(msgExpiresIn)},
		{"approve", `{"email":"j@example.com","limit":1,"expires_in":315360001}`, nil, 400, msg(msgExpiresIn)},
		{"approve", `{"email":"j@example.com","limit":1,"expires_in":99999999999999999999}`, nil, 400, msg(msgExpiresIn)},
		{"approve", `{"email":"j@example.com","limit":1,"expires_at":"tomorrow"}`, nil, 400, msg(msgExpiresAt)},
		{"approve", `{"email":"j@example.com","limit":1,"expires_at":1893456000}`, nil, 400, msg(msgExpiresAt)},
		{"approve", `{"email":"j@example.com","limit":1,"expires_at":"2030-01-01"}`, nil, 400, msg(msgExpiresAt)},
		{"approve", `{"email":"j@example.com","limit":1,"expires_at":"2020-01-01T00:00:00Z"}`, nil, 400, msg(msgExpiresPast)},
		{"approve", `{"email":"j@example.com","limit":1,"expires_at":"2999-01-01T00:00:00Z"}`, nil, 400, msg(msgExpiresPast)},
		{"approve", `{"email":"j@example.com",`, nil, 400, msg("Invalid JSON body")},
		{"approve", `email=j%40example.com&limit=1`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, msg("Unsupported content type")},
		{"approve", `{"email":"j@example.com","limit":1,"x":"` + strings.Repeat("x", 2000) + `"}`, nil, 413, msg("Request body too large")},
		{"revoke", `{}`, nil, 400, msg(msgTokenMissing)},
		{"revoke", `{"token":""}`, nil, 400, msg(msgTokenMissing)},
		{"revoke", `{"token":1}`, nil, 400, msg(msgTokenType)},
		{"revoke", `{"token":"waiting-list"}`, nil, 400, msg("User does not exists")},
		{"revoke", `{"token":"nope"}`, nil, 400, msg("User does not exists")},
		{"revoke", `{"token":"x"}`, []string{"Content-Type", "text/plain"}, 415, msg("Unsupported content type")},
		{"reject", `{}`, nil, 400, msg(msgApproveEmail)},
		{"reject", `{"email":true}`, nil, 400, msg(msgEmailType)},
		{"reject", `[]`, nil, 400, msg("Invalid JSON body")},
		{"reject", `{"email":"nobody@example.com"}`, nil, 400, msg("Email does not exists")},
	} {
		t.Run(c.route+" "+c.body[:min(len(c.body), 40)], func(t *testing.T) {
			send(t, "PUT", base+"/api/"+c.route, c.body, append(auth, c.headers...)...).want(t, c.status, c.want)
			if got := fmt.Sprint(dataKeys(t, rs)); got != "[waiting-list]" {
				t.Fatalf("keys %s: something was stored", got)
			}
			if got := rs.Do("LLEN", "waiting-list"); got != "1" {
				t.Fatalf("LLEN = %s", got)
			}
		})
	}
}

// A crash between approve's steps: the approving key and the record are
// written, the signup is still listed and no email is queued. Approving
// again, with no token or the first one, completes the first attempt.
func TestApproveAfterCrash(t *testing.T) {
	for _, c := range []struct {
		name, body    string
		recordWritten bool
	}{
		{"record written, no token", `{"email":"jane@example.com","limit":50}`, true},
		{"record written, same token", `{"email":"jane@example.com","limit":50,"token":"first-key"}`, true},
		{"record written, other token", `{"email":"jane@example.com","limit":50,"token":"second-key"}`, true},
		{"record not written, no token", `{"email":"jane@example.com","limit":50}`, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			rs := redistest.Start(t)
			base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
			auth := []string{"Authorization", adminBearer(t, "alice")}
			rs.Do("RPUSH", "waiting-list", `{"name":"Jane","email":"Jane@example.com","building":"","calls":1}`)
			rs.Do("SET", "pesto:{waiting-list}:approving:jane@example.com", "first-key")
			wantLimit := "50"
			if c.recordWritten {
				rs.Do("SET", "first-key", `{"UserEmail":"Jane@example.com","MonthlyLimit":20,"Revoked":false}`)
				wantLimit = "20"
			}

			if got := tokenOf(t, send(t, "PUT", base+"/api/approve", c.body, auth...)); got != "first-key" {
				t.Fatalf("token %q, want the first attempt's", got)
			}
			if got, want := rs.Do("GET", "first-key"), `{"UserEmail":"Jane@example.com","MonthlyLimit":`+wantLimit+`,"Revoked":false}`; got != want {
				t.Fatalf("record %s, want %s", got, want)
			}
			if got := fmt.Sprint(dataKeys(t, rs)); got != "[first-key]" {
				t.Fatalf("keys %s, want only the record", got)
			}
			want := fmt.Sprint([]map[string]string{{"to": "Jane@example.com", "name": "Jane", "token": "first-key", "limit": wantLimit}})
			if got := fmt.Sprint(outboxEntries(t, rs)); got != want {
				t.Fatalf("outbox %s, want %s", got, want)
			}
			// And once more: nothing new.
			send(t, "PUT", base+"/api/approve", `{"email":"jane@example.com","limit":50,"token":"first-key"}`, auth...).
				want(t, 400, `{"message":"Token already exists"}`)
			if n := len(outboxEntries(t, rs)); n != 1 {
				t.Fatalf("%d outbox entries, want 1", n)
			}
		})
	}
}

// Signups made while an approve runs are never lost; racing approves of
// one person give one record and one email.
func TestApproveConcurrent(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	auth := []string{"Authorization", adminBearer(t, "alice")}
	for i := range 20 {
		rs.Do("RPUSH", "waiting-list", fmt.Sprintf(`{"name":"P","email":"p%d@example.com","building":"","calls":1}`, i))
	}
	var wg sync.WaitGroup
	tokens := make([]string, 5)
	for i := range tokens {
		wg.Go(func() {
			r := send(t, "PUT", base+"/api/approve", `{"email":"p7@example.com","limit":3}`, auth...)
			if r.status == 200 {
				tokens[i] = tokenOf(t, r)
			}
		})
	}
	for i := range 30 {
		wg.Go(func() {
			send(t, "POST", base+"/api/register", fmt.Sprintf(`{"name":"N","email":"n%d@example.com","calls":1}`, i)).
				want(t, 201, created)
		})
	}
	wg.Wait()

	if got := rs.Do("LLEN", "waiting-list"); got != "49" {
		t.Fatalf("LLEN = %s, want 49", got)
	}
	body := send(t, "GET", base+"/api/pending", "", auth...).body
	for i := range 30 {
		if !strings.Contains(body, fmt.Sprintf(`"n%d@example.com"`, i)) {
			t.Errorf("signup n%d lost", i)
		}
	}
	if strings.Contains(body, "p7@") {
		t.Error("approved signup still listed")
	}
	entries := outboxEntries(t, rs)
	if len(entries) != 1 {
		t.Fatalf("%d outbox entries, want 1", len(entries))
	}
	for _, tok := range tokens {
		if tok != "" && tok != entries[0]["token"] {
			t.Fatalf("racing approves answered different tokens: %q", tokens)
		}
	}
	// One record beside the waiting list.
	want := []string{entries[0]["token"], "waiting-list"}
	slices.Sort(want)
	if got := fmt.Sprint(dataKeys(t, rs)); got != fmt.Sprint(want) {
		t.Fatalf("keys %s, want one record and the list", got)
	}
}

func TestRevoke(t *testing.T) {
	rs := redistest.Start(t)
	base, logs := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	auth := []string{"Authorization", adminBearer(t, "bob")}

	trial := send(t, "POST", base+"/api/trial", "")
	var v struct{ Token string }
	if err := json.Unmarshal([]byte(trial.body), &v); err != nil || v.Token == "" {
		t.Fatalf("trial: %d %s", trial.status, trial.body)
	}
	before := rs.Do("GET", v.Token)
	rs.Do("SET", "legacy", `{"email":"old@example.com","limit":42,"token":"legacy"}`)
	rs.Do("SET", "rated", `{"UserEmail":"rated@example.com","MonthlyLimit":42,"Revoked":false,"Rate":"5/s"}`)

	send(t, "PUT", base+"/api/revoke", `{"token":"`+v.Token+`"}`, auth...).want(t, 200, `{"message":"OK"}`)
	send(t, "PUT", base+"/api/revoke", `{"token":"legacy"}`, auth...).want(t, 200, `{"message":"OK"}`)
	send(t, "PUT", base+"/api/revoke", `{"token":"rated"}`, auth...).want(t, 200, `{"message":"OK"}`)
	if got, want := rs.Do("GET", "rated"), `{"UserEmail":"rated@example.com","MonthlyLimit":42,"Revoked":true,"Rate":"5/s"}`; got != want {
		t.Fatalf("record %s, want %s (its rate kept)", got, want)
	}

	if got, want := rs.Do("GET", v.Token), strings.Replace(before, `"Revoked":false`, `"Revoked":true`, 1); got != want {
		t.Fatalf("record %s, want %s", got, want)
	}
	if ttl, _ := strconv.Atoi(rs.Do("TTL", v.Token)); ttl < 86390 || ttl > 86400 {
		t.Fatalf("TTL after revoke = %d, want ~86400", ttl)
	}
	if got, want := rs.Do("GET", "legacy"), `{"UserEmail":"old@example.com","MonthlyLimit":42,"Revoked":true}`; got != want {
		t.Fatalf("record %s, want %s", got, want)
	}
	if got := rs.Do("TTL", "legacy"); got != "-1" {
		t.Fatalf("TTL = %s, want -1", got)
	}
	// Revoking twice is fine; an unknown key or a list is not a user.
	send(t, "PUT", base+"/api/revoke", `{"token":"legacy"}`, auth...).want(t, 200, `{"message":"OK"}`)
	send(t, "PUT", base+"/api/revoke", `{"token":"nope"}`, auth...).want(t, 400, `{"message":"User does not exists"}`)
	rs.Do("RPUSH", "some-list", "x")
	send(t, "PUT", base+"/api/revoke", `{"token":"some-list"}`, auth...).want(t, 400, `{"message":"User does not exists"}`)
	if !strings.Contains(logs.String(), `"admin":"bob"`) {
		t.Fatal("revoke not logged with the admin")
	}
}

func TestReject(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	auth := []string{"Authorization", adminBearer(t, "carol")}
	rs.Do("RPUSH", "waiting-list", `{"name":"A","email":"a@example.com","building":"","calls":1}`)
	rs.Do("RPUSH", "waiting-list", `{"name":"B","email":"b@example.com","building":null,"calls":1}`)
	rs.Do("SET", waitlist.ApprovingKey("b@example.com"), "half-approved")

	send(t, "PUT", base+"/api/reject", `{"email":" B@Example.com"}`, auth...).want(t, 200, `{"message":"OK"}`)
	if got := rs.Do("LLEN", "waiting-list") + " " + rs.Do("LINDEX", "waiting-list", "0"); got != `1 {"name":"A","email":"a@example.com","building":"","calls":1}` {
		t.Fatalf("list: %s", got)
	}
	if len(outboxEntries(t, rs)) != 0 || rs.Do("EXISTS", waitlist.ApprovingKey("b@example.com")) != "0" {
		t.Fatal("reject queued an email or left the approving key")
	}
	send(t, "PUT", base+"/api/reject", `{"email":"b@example.com"}`, auth...).want(t, 400, `{"message":"Email does not exists"}`)

	// A legacy element whose email is no address at all can still be
	// rejected by that text.
	rs.Do("RPUSH", "waiting-list", `{"name":"L","email":" Legacy-No-At ","calls":1}`)
	send(t, "PUT", base+"/api/reject", `{"email":"legacy-no-at"}`, auth...).want(t, 200, `{"message":"OK"}`)
	if got := rs.Do("LLEN", "waiting-list"); got != "1" {
		t.Fatalf("LLEN = %s, want 1", got)
	}
}

// approve's expiry is the record's TTL: the record's bytes are those of a
// key that does not expire, and everything else (the signup leaves the
// list, one email) is as for any approval.
func TestApproveExpiry(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	auth := []string{"Authorization", adminBearer(t, "alice")}
	for _, e := range []string{"in", "at", "none"} {
		rs.Do("RPUSH", "waiting-list", `{"name":"N","email":"`+e+`@example.com","building":"","calls":1}`)
	}

	start := time.Now()
	token := tokenOf(t, send(t, "PUT", base+"/api/approve", `{"email":"in@example.com","limit":5,"expires_in":3600}`, auth...))
	if got, want := rs.Do("GET", token), `{"UserEmail":"in@example.com","MonthlyLimit":5,"Revoked":false}`; got != want {
		t.Fatalf("record %s, want %s", got, want)
	}
	at, _ := strconv.ParseInt(rs.Do("PEXPIRETIME", token), 10, 64)
	if lo, hi := start.Add(time.Hour).UnixMilli(), time.Now().Add(time.Hour).UnixMilli(); at < lo || at > hi {
		t.Fatalf("expires at %d, want within [%d, %d] (an hour after the approve)", at, lo, hi)
	}

	when := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	token = tokenOf(t, send(t, "PUT", base+"/api/approve",
		`{"email":"at@example.com","limit":5,"expires_at":"`+when.In(time.FixedZone("", 7*3600)).Format(time.RFC3339)+`"}`, auth...))
	if got, want := rs.Do("PEXPIRETIME", token), strconv.FormatInt(when.UnixMilli(), 10); got != want {
		t.Fatalf("PEXPIRETIME = %s, want %s (expires_at exactly, whatever its zone)", got, want)
	}

	token = tokenOf(t, send(t, "PUT", base+"/api/approve", `{"email":"none@example.com","limit":5,"expires_in":null,"expires_at":null}`, auth...))
	if got := rs.Do("TTL", token); got != "-1" {
		t.Fatalf("TTL = %s, want -1 (null: no expiry)", got)
	}
	if got := rs.Do("LLEN", "waiting-list"); got != "0" {
		t.Fatalf("LLEN = %s", got)
	}
	if n := len(outboxEntries(t, rs)); n != 3 {
		t.Fatalf("%d outbox entries, want 3", n)
	}
}
