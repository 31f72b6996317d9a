package main

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"pesto/shared/config"
	"pesto/shared/logging"
	"pesto/shared/redistest"
	"pesto/shared/servicetest"
	"pesto/shared/wire"
)

func runMigrate(t *testing.T, rs *redistest.Server, storage string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), append([]string{"migrate-keys"}, args...),
		servicetest.Env(testEnv(map[string]string{"REDIS_URL": rs.URL, "KEY_STORAGE": storage})), &out, nil)
	return out.String(), err
}

// migrate-keys: a dry run writes nothing; --apply needs KEY_STORAGE=hashed
// and moves every plaintext key record, bytes and TTL exactly, and nothing
// else; a second run finds nothing left. On a Cluster every master is
// scanned (PESTO_REDIS=cluster).
func TestMigrateKeys(t *testing.T) {
	rs := redistest.Start(t)
	const n = 1200 // a few batches
	rec := func(i int) string {
		return `{"UserEmail":"u` + strconv.Itoa(i) + `@example.com","MonthlyLimit":` + strconv.Itoa(i+1) + `,"Revoked":false}`
	}
	tok := func(i int) string { return "key-" + strconv.Itoa(i) + "-abcdefghijklmnopqrstuvwxyz" }
	for i := range n {
		if i%10 == 0 {
			rs.Do("SET", tok(i), rec(i), "PX", "86400000")
		} else {
			rs.Do("SET", tok(i), rec(i))
		}
	}
	legacy := `{"email":"legacy@example.com","limit":7}`
	rs.Do("SET", "legacy-key", legacy)
	// The README's example key: its unsalted hash would give it away to
	// whoever tries candidates, so migrate-keys names it (never whole).
	johndoe := `{"UserEmail":"johndoe@example.com","MonthlyLimit":100,"Revoked":false}`
	rs.Do("SET", "johndoe-key", johndoe)
	untouched := map[string]string{
		"not-a-record":                     "hello",
		"counter/2026-11/u1@example.com":   "5",
		"pesto:{waiting-list}:people:seen": "x",
		wire.HashedKey("already-hashed"):   rec(0),
	}
	for k, v := range untouched {
		rs.Do("SET", k, v)
	}
	rs.Do("RPUSH", "waiting-list", `{"name":"J","email":"j@example.com","building":"","calls":1}`)
	rs.Do("RPUSH", "list-under-a-token-name", "x")

	out, err := runMigrate(t, rs, "plain")
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	if !strings.Contains(out, "dry run done: ") || !strings.Contains(out, strconv.Itoa(n+2)+" plaintext key records, moved 0") ||
		!strings.Contains(out, "weak keys 2; nothing written") {
		t.Fatalf("dry run output:\n%s", out)
	}
	for _, weak := range []string{
		"weak key " + logging.Token("johndoe-key") + " of johndoe@example.com: about 34 bits\n",
		"weak key " + logging.Token("legacy-key") + " of legacy@example.com: about 29 bits\n",
		"2 weak keys (named above by their first characters and a hash)",
		"Rotate them (PUT /api/rotate) before they are hashed",
	} {
		if !strings.Contains(out, weak) {
			t.Errorf("dry run output lacks %q:\n%s", weak, out)
		}
	}
	if strings.Contains(out, tok(1)) || strings.Contains(out, "legacy-key") || strings.Contains(out, "johndoe-key") {
		t.Fatalf("output names a key:\n%s", out)
	}
	if got := rs.Do("GET", tok(3)); got != rec(3) {
		t.Fatal("the dry run moved a record")
	}
	if rs.Do("EXISTS", wire.HashedKeysMarker) != "0" {
		t.Fatal("the dry run set the marker of hashed records")
	}

	_, err = runMigrate(t, rs, "plain", "--apply")
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Var != "KEY_STORAGE" {
		t.Fatalf("--apply with KEY_STORAGE=plain: %v", err)
	}
	if _, err := runMigrate(t, rs, "hashed", "--bogus"); !errors.Is(err, errUsage) {
		t.Fatalf("bad flag: %v", err)
	}

	out, err = runMigrate(t, rs, "hashed", "--apply", "--batch", "200")
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if !strings.Contains(out, "done: ") || !strings.Contains(out, "moved "+strconv.Itoa(n+2)+",") || strings.Count(out, "cursor") < 3 ||
		!strings.Contains(out, "not records 1, weak keys 2\n") {
		t.Fatalf("apply output:\n%s", out)
	}
	t.Logf("apply output (last lines): %s", out[max(0, len(out)-300):])
	if rs.Do("GET", wire.HashedKeysMarker) != "1" {
		t.Fatal("--apply did not set the marker of hashed records")
	}
	for i := range n {
		if got := rs.Do("EXISTS", tok(i)); got != "0" {
			t.Fatalf("%s still plaintext", tok(i))
		}
		if got := rs.Do("GET", wire.HashedKey(tok(i))); got != rec(i) {
			t.Fatalf("%s: hashed form holds %q, want %q", tok(i), got, rec(i))
		}
		ttl, _ := strconv.Atoi(rs.Do("PTTL", wire.HashedKey(tok(i))))
		if i%10 == 0 && (ttl < 86_000_000 || ttl > 86_400_000) || i%10 != 0 && ttl != -1 {
			t.Fatalf("%s: PTTL %d", tok(i), ttl)
		}
	}
	if got := rs.Do("GET", wire.HashedKey("legacy-key")); got != legacy {
		t.Errorf("legacy record: %q (its bytes must not change)", got)
	}
	for k, v := range untouched {
		if got := rs.Do("GET", k); got != v {
			t.Errorf("%s changed: %q", k, got)
		}
	}
	if rs.Do("TYPE", "list-under-a-token-name") != "list" || rs.Do("LLEN", "waiting-list") != "1" {
		t.Error("a key of another type was touched")
	}

	out, err = runMigrate(t, rs, "hashed", "--apply")
	if err != nil || !strings.Contains(out, "0 plaintext key records, moved 0") {
		t.Fatalf("second run: %v\n%s", err, out)
	}
}
