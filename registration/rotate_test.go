package main

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"pesto/registration/internal/outbox"
	"pesto/registration/internal/rotation"
	"pesto/registration/internal/smtptest"
	"pesto/shared/redistest"
	"pesto/shared/servicetest"
)

// Rotation end to end: a new key for the same email and limit, emailed
// through the outbox to a real SMTP server; the old key lives for the grace,
// and a retry gives the same key and no second email.
func TestRotate(t *testing.T) {
	rs := redistest.Start(t)
	srv := smtptest.Start(t)
	base, logs := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "SMTP_URL": srv.URL("tls=none")})
	auth := []string{"Authorization", adminBearer(t, "alice")}
	rotate := func(body string) response { return send(t, "PUT", base+"/api/rotate", body, auth...) }
	// The key has a rate of its own: its successor keeps it.
	const oldRecord = `{"UserEmail":"Jane@Example.com","MonthlyLimit":250,"Revoked":false,"Rate":"600/m;burst=100"}`
	rs.Do("SET", "old-key", oldRecord)
	rs.Do("SET", "counter/2026-11/Jane@Example.com", "17")

	newKey := tokenOf(t, rotate(`{"token":"old-key","grace":3600}`))
	if !approvedToken.MatchString(newKey) {
		t.Fatalf("new key %q is not 64 [A-Za-z0-9]", newKey)
	}
	// The memory of the rotation holds the new key sealed under the
	// server's secret and the old key (TestRotationSealNeedsTheServerSecret).
	sealed := rs.Do("HGET", rotation.MemoryKey("old-key"), "token")
	if sealed == "" || strings.Contains(sealed, newKey) {
		t.Fatalf("rotation on record: %q, want the new key sealed", sealed)
	}
	seal := rotation.NewSeal([]byte(testServerSecret))
	if opened, err := seal.Open("old-key", sealed); err != nil || opened != newKey {
		t.Fatalf("opened with the secret and the old key: %q %v, want the new key", opened, err)
	}
	if _, err := seal.Open("other-key", sealed); err == nil {
		t.Fatal("another key opened the seal")
	}
	if got := rs.Do("GET", newKey); got != oldRecord {
		t.Fatalf("new record %s, want %s (same email, limit and rate)", got, oldRecord)
	}
	if got := rs.Do("TTL", newKey); got != "-1" {
		t.Errorf("new key TTL = %s, want -1 (the old one did not expire)", got)
	}
	if got := rs.Do("GET", "old-key"); got != oldRecord {
		t.Errorf("old record %s, want it unchanged during the grace", got)
	}
	if ttl, _ := strconv.Atoi(rs.Do("TTL", "old-key")); ttl < 3590 || ttl > 3600 {
		t.Errorf("old key TTL = %d, want the grace, 3600", ttl)
	}
	if got := rs.Do("GET", "counter/2026-11/Jane@Example.com"); got != "17" {
		t.Errorf("counter = %s: the quota is per email, it carries on", got)
	}

	got := srv.WaitReceived(t, 1, 10*time.Second)
	if got[0].To != "Jane@Example.com" {
		t.Errorf("emailed to %q", got[0].To)
	}
	m := smtptest.ParseMail(t, got[0].Data)
	for part, body := range map[string]string{"text": m.Text, "html": m.HTML} {
		for _, want := range []string{"X-Pesto-Token: " + newKey, "250 calls per calendar month"} {
			if !strings.Contains(body, want) {
				t.Errorf("%s part lacks %q:\n%s", part, want, body)
			}
		}
	}
	servicetest.Poll(t, 5*time.Second, "the outbox is empty", func() bool { return rs.Do("XLEN", outbox.Stream) == "0" })

	// A retry: the same new key, no second email, the grace not pushed on.
	rs.Do("PEXPIRE", "old-key", "1000000")
	if again := tokenOf(t, rotate(`{"token":"old-key","grace":3600}`)); again != newKey {
		t.Fatalf("retry gave %q, want the first rotation's %q", again, newKey)
	}
	if ttl, _ := strconv.Atoi(rs.Do("TTL", "old-key")); ttl > 1000 {
		t.Errorf("old key TTL = %d after the retry, want at most 1000 (never pushed forward)", ttl)
	}
	if got := rs.Do("XLEN", outbox.Stream); got != "0" {
		t.Errorf("XLEN = %s after the retry, want 0", got)
	}
	if n := len(srv.Received()); n != 1 {
		t.Errorf("%d emails after the retry, want 1", n)
	}
	if l := logs.String(); !strings.Contains(l, `"msg":"rotated"`) || !strings.Contains(l, `"admin":"alice"`) || strings.Contains(l, newKey) {
		t.Errorf("rotation not logged with the admin, or the whole key logged:\n%s", l)
	}

	// Once the grace is over the old key is gone, and rotating it again says so.
	rs.Do("DEL", "old-key")
	// (the memory of the rotation still answers with the same key)
	if again := tokenOf(t, rotate(`{"token":"old-key"}`)); again != newKey {
		t.Fatalf("after the grace: %q, want %q", again, newKey)
	}
	rs.Do("DEL", rotation.MemoryKey("old-key"))
	rotate(`{"token":"old-key"}`).want(t, 400, `{"message":"User does not exists"}`)
	if n := len(srv.Received()); n != 1 {
		t.Errorf("%d emails, want 1", n)
	}
}

// grace 0 revokes the old key at once; no grace given means 24 hours; an
// expiring key's successor expires when it would have.
func TestRotateGrace(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	auth := []string{"Authorization", adminBearer(t, "alice")}
	rotate := func(body string) response { return send(t, "PUT", base+"/api/rotate", body, auth...) }
	rs.Do("SET", "key-now", `{"UserEmail":"a@example.com","MonthlyLimit":5,"Revoked":false}`, "EX", "5000")
	rs.Do("SET", "key-default", `{"email":"b@example.com","limit":6}`) // a legacy shape

	k := tokenOf(t, rotate(`{"token":"key-now","grace":0}`))
	if got, want := rs.Do("GET", "key-now"), `{"UserEmail":"a@example.com","MonthlyLimit":5,"Revoked":true}`; got != want {
		t.Errorf("old record %s, want %s (revoked at once)", got, want)
	}
	if ttl, _ := strconv.Atoi(rs.Do("TTL", "key-now")); ttl < 4990 || ttl > 5000 {
		t.Errorf("old TTL = %d, want its own 5000 kept", ttl)
	}
	if ttl, _ := strconv.Atoi(rs.Do("TTL", k)); ttl < 4990 || ttl > 5000 {
		t.Errorf("new TTL = %d, want 5000: it expires when the old key would have", ttl)
	}
	// A retry after the revocation completes, a new rotation of the revoked key does not.
	if again := tokenOf(t, rotate(`{"token":"key-now","grace":0}`)); again != k {
		t.Errorf("retry: %q, want %q", again, k)
	}
	rs.Do("DEL", rotation.MemoryKey("key-now"))
	rotate(`{"token":"key-now"}`).want(t, 400, `{"message":"Token has been revoked"}`)

	k = tokenOf(t, rotate(`{"token":"key-default"}`))
	if got, want := rs.Do("GET", k), `{"UserEmail":"b@example.com","MonthlyLimit":6,"Revoked":false}`; got != want {
		t.Errorf("new record %s, want %s (written as ours)", got, want)
	}
	if got := rs.Do("GET", "key-default"); got != `{"email":"b@example.com","limit":6}` {
		t.Errorf("old record changed: %s", got)
	}
	if ttl, _ := strconv.Atoi(rs.Do("TTL", "key-default")); ttl < 86390 || ttl > 86400 {
		t.Errorf("old TTL = %d, want the default grace 86400", ttl)
	}
	if n := len(outboxEntries(t, rs)); n != 2 {
		t.Errorf("%d outbox entries, want 2 (one per rotation)", n)
	}
}

// A rotation whose new key was revoked, or deleted, since is not answered
// again with that key: rotating the old key once more is refused and
// changes nothing. (It answered 200 with the revoked key, or wrote the
// deleted key's record again.)
func TestRotateRevokedOrGoneSuccessor(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	auth := []string{"Authorization", adminBearer(t, "alice")}
	put := func(path, body string) response { return send(t, "PUT", base+path, body, auth...) }
	const k1Record = `{"UserEmail":"jane@example.com","MonthlyLimit":100,"Revoked":false}`

	for _, c := range []struct {
		name   string
		change func(k2 string)
		want   string
	}{
		{"revoked", func(k2 string) { put("/api/revoke", `{"token":"`+k2+`"}`).want(t, 200, `{"message":"OK"}`) },
			`{"message":"Token has been revoked"}`},
		{"deleted", func(k2 string) { rs.Do("DEL", k2) }, `{"message":"User does not exists"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			k1 := "k1-" + c.name
			rs.Do("SET", k1, k1Record)
			k2 := tokenOf(t, put("/api/rotate", `{"token":"`+k1+`","grace":3600}`))
			emails := len(outboxEntries(t, rs))
			c.change(k2)
			k2Record := rs.Do("GET", k2)

			for _, grace := range []string{"3600", "0"} {
				put("/api/rotate", `{"token":"`+k1+`","grace":`+grace+`}`).want(t, 400, c.want)
				if got := rs.Do("GET", k1); got != k1Record {
					t.Errorf("grace %s: K1 holds %s, want it unchanged", grace, got)
				}
				if ttl, _ := strconv.Atoi(rs.Do("TTL", k1)); ttl < 3590 || ttl > 3600 {
					t.Errorf("grace %s: K1's TTL = %d, want the first rotation's grace", grace, ttl)
				}
				if got := rs.Do("GET", k2); got != k2Record {
					t.Errorf("grace %s: K2 holds %q, want %q (never written again)", grace, got, k2Record)
				}
				if n := len(outboxEntries(t, rs)); n != emails {
					t.Errorf("grace %s: %d outbox entries, want %d (no email)", grace, n, emails)
				}
			}
		})
	}
}

// Bad rotations answer 400 and change nothing.
func TestRotateValidation(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	auth := []string{"Authorization", adminBearer(t, "alice")}
	rs.Do("SET", "live", `{"UserEmail":"l@example.com","MonthlyLimit":5,"Revoked":false}`)
	rs.Do("SET", "gone", `{"UserEmail":"g@example.com","MonthlyLimit":5,"Revoked":true}`)
	rs.Do("SET", "broken", `{"UserEmail":`)
	rs.Do("RPUSH", "a-list", "x")
	msg := func(m string) string { return `{"message":"` + m + `"}` }
	for _, c := range []struct {
		body   string
		status int
		want   string
	}{
		{`{}`, 400, msg(msgTokenMissing)},
		{`{"token":""}`, 400, msg(msgTokenMissing)},
		{`{"token":5}`, 400, msg(msgTokenType)},
		{`{"token":"live","grace":-1}`, 400, msg(msgGrace)},
		{`{"token":"live","grace":1.5}`, 400, msg(msgGrace)},
		{`{"token":"live","grace":"60"}`, 400, msg(msgGrace)},
		{`{"token":"live","grace":31536001}`, 400, msg(msgGrace)},
		{`{"token":"live","grace":1e3}`, 400, msg(msgGrace)},
		{`{"token":"nope"}`, 400, msg("User does not exists")},
		{`{"token":"waiting-list"}`, 400, msg("User does not exists")},
		{`{"token":"a-list"}`, 400, msg("User does not exists")},
		{`{"token":"broken"}`, 400, msg("User does not exists")},
		{`{"token":"gone"}`, 400, msg("Token has been revoked")},
		{`{"token":"live",`, 400, msg("Invalid JSON body")},
	} {
		t.Run(c.body, func(t *testing.T) {
			send(t, "PUT", base+"/api/rotate", c.body, auth...).want(t, c.status, c.want)
			if got, want := fmt.Sprint(dataKeys(t, rs)), "[a-list broken gone live]"; got != want {
				t.Fatalf("keys %s, want %s: something was stored", got, want)
			}
			if ttl := rs.Do("TTL", "live"); ttl != "-1" {
				t.Fatalf("live key TTL = %s", ttl)
			}
		})
	}
	send(t, "PUT", base+"/api/rotate", `{"token":"live"}`).want(t, 401, msg("Unauthorized"))
}

// legacyAEAD seals as the release before the server secret did, and as
// anyone holding the old key can: AES-256-GCM keyed by the SHA-256 of the
// label and the old key alone.
func legacyAEAD(old string) cipher.AEAD {
	key := sha256.Sum256([]byte("pesto rotation seal\x00" + old))
	block, _ := aes.NewCipher(key[:])
	aead, _ := cipher.NewGCM(block)
	return aead
}

// The attack: someone who holds a rotated key (leaked; it lives on for the
// grace) and can read Redis (a dump, a replica) opens the memory of the
// rotation and learns the new key, for the grace and a day. Before, the
// seal's key was derived from the old key alone; now it needs the server's
// secret too (SERVER_SECRET), which is not in Redis: the old key, alone or
// with another secret, opens nothing. A rotation remembered by the release
// before (sealed with the old key alone) is still completed by a retry.
func TestRotationSealNeedsTheServerSecret(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL})
	auth := []string{"Authorization", adminBearer(t, "alice")}
	const record = `{"UserEmail":"jane@example.com","MonthlyLimit":100,"Revoked":false}`
	rs.Do("SET", "leaked-key", record)
	newKey := tokenOf(t, send(t, "PUT", base+"/api/rotate", `{"token":"leaked-key"}`, auth...))

	sealed := rs.Do("HGET", rotation.MemoryKey("leaked-key"), "token") // what a Redis reader sees
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(sealed, "2."))
	if err != nil || !strings.HasPrefix(sealed, "2.") {
		t.Fatalf("sealed %q: want 2.<base64url>", sealed)
	}
	attacker := legacyAEAD("leaked-key")
	if plain, err := attacker.Open(nil, raw[:12], raw[12:], nil); err == nil {
		t.Fatalf("the old key alone opened the seal: %q", plain)
	}
	if _, err := rotation.NewSeal([]byte("another-server-secret-0123456789-abcdef")).Open("leaked-key", sealed); err == nil {
		t.Fatal("another server's secret opened the seal")
	}
	if got, err := rotation.NewSeal([]byte(testServerSecret)).Open("leaked-key", sealed); err != nil || got != newKey {
		t.Fatalf("the server's own seal: %q %v, want the new key", got, err)
	}

	// A rotation on record from the release before: its retry answers the
	// key it remembered.
	rs.Do("SET", "older-key", record)
	remembered := "rotated-before-the-upgrade-0123456789abcdefghijklmnopqrstuvwxyz0"
	aead := legacyAEAD("older-key")
	nonce := make([]byte, aead.NonceSize())
	rs.Do("HSET", rotation.MemoryKey("older-key"), "token", base64.RawURLEncoding.EncodeToString(aead.Seal(nonce, nonce, []byte(remembered), nil)))
	if got := tokenOf(t, send(t, "PUT", base+"/api/rotate", `{"token":"older-key"}`, auth...)); got != remembered {
		t.Fatalf("retry of a remembered rotation: %q, want %q", got, remembered)
	}
	if got := rs.Do("GET", remembered); got != record {
		t.Fatalf("its record: %q", got)
	}
}
