package main

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"

	"pesto/registration/internal/outbox"
	"pesto/shared/redistest"
	"pesto/shared/wire"
)

// With KEY_STORAGE=hashed every new key (approve, trial, rotate) is stored
// under its hashed name only, the same record bytes; the plaintext is only
// in the answer and the email. Revoke and rotate find a key in either form
// and change every form it has.
func TestHashedStorage(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "KEY_STORAGE": "hashed"})
	auth := []string{"Authorization", adminBearer(t, "alice")}
	put := func(path, body string) response { return send(t, "PUT", base+path, body, auth...) }
	noPlaintext := func(token string) {
		t.Helper()
		if got := rs.Do("EXISTS", token); got != "0" {
			t.Fatalf("the plaintext key %s… is stored", token[:6])
		}
		for _, k := range dataKeys(t, rs) {
			if strings.Contains(k, token) {
				t.Fatalf("a key name holds the token: %s", k)
			}
		}
		// Nor any value but the outbox's (the email in waiting): the
		// memory of a rotation holds its new key sealed.
		for _, k := range rs.Keys("*") {
			var v string
			switch {
			case k == outbox.Stream || k == outbox.Dead:
				continue
			case rs.Do("TYPE", k) == "string":
				v = rs.Do("GET", k)
			case rs.Do("TYPE", k) == "hash":
				v = rs.Do("HGETALL", k)
			case rs.Do("TYPE", k) == "list":
				v = strings.Join(rs.DoList("LRANGE", k, "0", "-1"), "\n")
			}
			if strings.Contains(v, token) {
				t.Fatalf("the value of %s holds the token", k)
			}
		}
	}

	// approve
	rs.Do("RPUSH", "waiting-list", `{"name":"Jane","email":"jane@example.com","building":"","calls":5}`)
	key := tokenOf(t, put("/api/approve", `{"email":"jane@example.com","limit":100,"expires_in":3600}`))
	janeRec := `{"UserEmail":"jane@example.com","MonthlyLimit":100,"Revoked":false}`
	if got := rs.Do("GET", wire.HashedKey(key)); got != janeRec {
		t.Fatalf("hashed record %q", got)
	}
	if ttl, _ := strconv.Atoi(rs.Do("TTL", wire.HashedKey(key))); ttl < 3590 || ttl > 3600 {
		t.Fatalf("TTL %d", ttl)
	}
	noPlaintext(key)
	// The same token is taken, in either form.
	rs.Do("RPUSH", "waiting-list", `{"name":"Joe","email":"joe@example.com","building":"","calls":5}`)
	put("/api/approve", `{"email":"joe@example.com","limit":1,"token":"`+key+`"}`).want(t, 400, `{"message":"Token already exists"}`)
	rs.Do("SET", "legacy-plain-key", `{"UserEmail":"old@example.com","MonthlyLimit":5,"Revoked":false}`)
	put("/api/approve", `{"email":"joe@example.com","limit":1,"token":"legacy-plain-key"}`).want(t, 400, `{"message":"Token already exists"}`)

	// trial
	r := send(t, "POST", base+"/api/trial", "")
	var trial struct{ Token string }
	if err := json.Unmarshal([]byte(r.body), &trial); err != nil || r.status != 200 {
		t.Fatal(r)
	}
	if got := rs.Do("GET", wire.HashedKey(trial.Token)); !strings.HasPrefix(got, `{"UserEmail":"trial-`) {
		t.Fatalf("trial record %q", got)
	}
	noPlaintext(trial.Token)

	// rotate a hashed key: the new one is hashed too, the old one gets its grace
	newKey := tokenOf(t, put("/api/rotate", `{"token":"`+key+`","grace":60}`))
	if got := rs.Do("GET", wire.HashedKey(newKey)); got != janeRec {
		t.Fatalf("rotated record %q", got)
	}
	noPlaintext(newKey)
	if ttl, _ := strconv.Atoi(rs.Do("TTL", wire.HashedKey(key))); ttl < 50 || ttl > 60 {
		t.Fatalf("old key's TTL %d, want the grace", ttl)
	}

	// rotate a plaintext (legacy) key: found; the new key hashed; grace 0 revokes the plaintext
	legacyKey := tokenOf(t, put("/api/rotate", `{"token":"legacy-plain-key","grace":0}`))
	if got := rs.Do("GET", wire.HashedKey(legacyKey)); got != `{"UserEmail":"old@example.com","MonthlyLimit":5,"Revoked":false}` {
		t.Fatalf("rotated legacy record %q", got)
	}
	if got := rs.Do("GET", "legacy-plain-key"); got != `{"UserEmail":"old@example.com","MonthlyLimit":5,"Revoked":true}` {
		t.Fatalf("old plaintext record %q", got)
	}

	// revoke finds either form, and revokes every form a key has (a
	// Cluster's migrate-keys may hold both for a moment).
	put("/api/revoke", `{"token":"`+newKey+`"}`).want(t, 200, `{"message":"OK"}`)
	if got := rs.Do("GET", wire.HashedKey(newKey)); got != `{"UserEmail":"jane@example.com","MonthlyLimit":100,"Revoked":true}` {
		t.Fatalf("revoked record %q", got)
	}
	both := `{"UserEmail":"both@example.com","MonthlyLimit":9,"Revoked":false}`
	rs.Do("SET", "key-in-both-forms", both, "EX", "500")
	rs.Do("SET", wire.HashedKey("key-in-both-forms"), both, "EX", "500")
	put("/api/revoke", `{"token":"key-in-both-forms"}`).want(t, 200, `{"message":"OK"}`)
	for _, name := range []string{"key-in-both-forms", wire.HashedKey("key-in-both-forms")} {
		if got := rs.Do("GET", name); got != `{"UserEmail":"both@example.com","MonthlyLimit":9,"Revoked":true}` {
			t.Errorf("%s: %q", name, got)
		}
		if ttl, _ := strconv.Atoi(rs.Do("TTL", name)); ttl < 490 {
			t.Errorf("%s: TTL %d, want kept", name, ttl)
		}
	}
	put("/api/revoke", `{"token":"no-such-key"}`).want(t, 400, `{"message":"User does not exists"}`)

	// The emails carry the plaintext keys (the one place they exist).
	var tokens []string
	for _, e := range outboxEntries(t, rs) {
		tokens = append(tokens, e["token"])
	}
	for _, k := range []string{key, newKey, legacyKey} {
		if !slices.Contains(tokens, k) {
			t.Errorf("no email for %s…", k[:6])
		}
	}
}

// With plain storage (the default) a key stored hashed is still found:
// rollback from hashed to plain loses no key.
func TestPlainStorageFindsHashedKeys(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	auth := []string{"Authorization", adminBearer(t, "alice")}
	rs.Do("SET", wire.HashedKey("hashed-key"), `{"UserEmail":"h@example.com","MonthlyLimit":9,"Revoked":false}`)
	newKey := tokenOf(t, send(t, "PUT", base+"/api/rotate", `{"token":"hashed-key","grace":0}`, auth...))
	if got := rs.Do("GET", newKey); got != `{"UserEmail":"h@example.com","MonthlyLimit":9,"Revoked":false}` {
		t.Fatalf("new key (plain storage) %q", got)
	}
	if got := rs.Do("GET", wire.HashedKey("hashed-key")); got != `{"UserEmail":"h@example.com","MonthlyLimit":9,"Revoked":true}` {
		t.Fatalf("old hashed record %q", got)
	}
}
