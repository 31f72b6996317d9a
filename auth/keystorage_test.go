package main

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"pesto/shared/apikey"
	"pesto/shared/redistest"
	"pesto/shared/servicetest"
	"pesto/shared/wire"
)

// auth finds a key in either form, whatever KEY_STORAGE says. With hashed
// storage a plaintext record it finds is moved to its hashed form (value
// and TTL, the plaintext deleted) on a single Redis; on a Cluster it is
// left for migrate-keys. Revocations of either form are seen at once
// through the cache.
func TestKeyStorage(t *testing.T) {
	for _, storage := range []string{"plain", "hashed"} {
		t.Run(storage, func(t *testing.T) {
			rs := redistest.Start(t)
			const (
				hashedTok = "tok-stored-hashed-0123456789"
				plainTok  = "tok-stored-plain-0123456789"
				hashedRec = `{"UserEmail":"h@example.com","MonthlyLimit":100,"Revoked":false}`
				plainRec  = `{"UserEmail":"p@example.com","MonthlyLimit":100,"Revoked":false}`
			)
			rs.Do("SET", wire.HashedKey(hashedTok), hashedRec)
			rs.Do("SET", wire.HashedKeysMarker, "1") // as every writer of a hashed record does
			rs.Do("SET", plainTok, plainRec, "PX", "3600000")
			a := startAuth(t, map[string]string{"REDIS_URL": rs.URL, "KEY_STORAGE": storage, "TOKEN_CACHE_TTL": "1h"})

			for range 3 {
				for _, tok := range []string{hashedTok, plainTok} {
					if got := call(t, "GET", a.URL, tok); got.Status != 200 || got.Body != "" {
						t.Fatalf("%s: %+v", tok, got)
					}
				}
				if got := call(t, "GET", a.URL, "tok-unknown-0123456789"); got.Status != 401 || got.Body != `{"message":"Token not registered"}` {
					t.Fatalf("unknown: %+v", got)
				}
			}
			// Counters unchanged: per email, one per call, whatever the form.
			month := wire.CounterKey(time.Now(), "")
			for _, email := range []string{"h@example.com", "p@example.com"} {
				if got := rs.Do("GET", month+email); got != "3" {
					t.Errorf("counter of %s = %q, want 3", email, got)
				}
			}

			moved := storage == "hashed" && !rs.Cluster
			plainName := plainTok
			if moved {
				plainName = wire.HashedKey(plainTok)
				if got := rs.Do("EXISTS", plainTok); got != "0" {
					t.Errorf("plaintext record still there after the move")
				}
				if ttl, _ := strconv.Atoi(rs.Do("PTTL", plainName)); ttl < 3_500_000 || ttl > 3_600_000 {
					t.Errorf("moved record's PTTL = %d, want its TTL kept", ttl)
				}
			} else if got := rs.Do("EXISTS", wire.HashedKey(plainTok)); got != "0" {
				t.Errorf("a plaintext record was moved with KEY_STORAGE=%s on a cluster=%v", storage, rs.Cluster)
			}
			if got := rs.Do("GET", plainName); got != plainRec {
				t.Errorf("%s holds %q, want the record's exact bytes", plainName, got)
			}
			if got := rs.Do("GET", wire.HashedKey(hashedTok)); got != hashedRec {
				t.Errorf("hashed record holds %q", got)
			}

			// Revocation of either form, written by anyone, is seen at once.
			for tok, name := range map[string]string{hashedTok: wire.HashedKey(hashedTok), plainTok: plainName} {
				rs.Do("SET", name, `{"UserEmail":"x@example.com","MonthlyLimit":100,"Revoked":true}`, "KEEPTTL")
				servicetest.Poll(t, time.Second, "revocation of "+name, func() bool {
					return call(t, "GET", a.URL, tok).Body == `{"message":"Token has been revoked"}`
				})
			}
		})
	}
}

// An unknown key costs at most two Redis lookups, and none once cached,
// with either storage. With plain storage where no key was ever hashed (no
// wire.HashedKeysMarker) it costs one: its hashed name is not looked up, so
// it is one entry of Redis's tracking table, not two (the marker's lookup is
// cached once for every key).
func TestUnknownKeyLookups(t *testing.T) {
	for _, c := range []struct {
		name, storage string
		marker        bool
		first, other  int // GETs of the first unknown key's first call; of another unknown key
	}{
		{"plain", "plain", false, 2, 1}, // the key, the marker; then the key alone
		{"plain after hashing", "plain", true, 3, 2},
		{"hashed", "hashed", false, 2, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			rs := redistest.StartStandalone(t)
			if c.marker {
				rs.Do("SET", wire.HashedKeysMarker, "1")
			}
			app, _ := newTestApp(t, rs, map[string]string{"KEY_STORAGE": c.storage, "TOKEN_CACHE_TTL": "1h"}, endOfMonth)
			before := commandCalls(t, rs, "get")
			for i := range 3 {
				if got := testCall(t, app, "GET", tokenHeader("tok-unknown")); got.Status != 401 {
					t.Fatal(got)
				}
				if n := commandCalls(t, rs, "get") - before; n != c.first {
					t.Fatalf("call %d: %d GETs in all, want %d (the first call's, then the cache)", i+1, n, c.first)
				}
			}
			if got := testCall(t, app, "GET", tokenHeader("tok-unknown-2")); got.Status != 401 {
				t.Fatal(got)
			}
			if n := commandCalls(t, rs, "get") - before - c.first; n != c.other {
				t.Fatalf("another unknown key: %d GETs, want %d", n, c.other)
			}
		})
	}
}

// A known key costs one lookup in its own storage's form, and none once
// cached: hashed keys with KEY_STORAGE=hashed, plaintext ones with plain.
func TestKnownKeyOneLookup(t *testing.T) {
	for _, storage := range []wire.KeyStorage{wire.StoragePlain, wire.StorageHashed} {
		t.Run(storage.String(), func(t *testing.T) {
			rs := redistest.StartStandalone(t)
			rs.Do("SET", storage.RecordKey("tok-known"), validRecord)
			app, _ := newTestApp(t, rs, map[string]string{"KEY_STORAGE": storage.String(), "TOKEN_CACHE_TTL": "1h"}, endOfMonth)
			before := commandCalls(t, rs, "get")
			for range 3 {
				if got := testCall(t, app, "GET", tokenHeader("tok-known")); got.Status != 200 {
					t.Fatal(got)
				}
			}
			if n := commandCalls(t, rs, "get") - before; n != 1 {
				t.Fatalf("%d GETs for three calls, want 1", n)
			}
		})
	}
}

// With hashed storage, auth replicas racing to move the same plaintext
// keys refuse no call and count each once.
func TestMoveUnderRacingReplicas(t *testing.T) {
	rs := redistest.Start(t)
	const keys, callsPerKey = 40, 6
	tok := func(i int) string { return "tok-racing-" + strconv.Itoa(i) + "-0123456789" }
	for i := range keys {
		rs.Do("SET", tok(i), `{"UserEmail":"r`+strconv.Itoa(i)+`@example.com","MonthlyLimit":1000,"Revoked":false}`)
	}
	replicas := []*authInstance{}
	for range 3 {
		replicas = append(replicas, startAuth(t, map[string]string{"REDIS_URL": rs.URL, "KEY_STORAGE": "hashed", "LOG_LEVEL": "info"}))
	}
	// Each key's calls race each other across the replicas; eight keys at
	// a time, so that a busy machine (-race, other tests) answers within
	// the calls' one-second deadline.
	for first := 0; first < keys; first += 8 {
		var wg sync.WaitGroup
		for i := first; i < min(first+8, keys); i++ {
			for j := range callsPerKey {
				wg.Go(func() {
					if got := call(t, "GET", replicas[j%len(replicas)].URL, tok(i)); got.Status != 200 {
						t.Errorf("%s: %+v", tok(i), got)
					}
				})
			}
		}
		wg.Wait()
	}
	month := wire.CounterKey(time.Now(), "")
	for i := range keys {
		if got := rs.Do("GET", month+"r"+strconv.Itoa(i)+"@example.com"); got != strconv.Itoa(callsPerKey) {
			t.Errorf("key %d counted %q, want %d", i, got, callsPerKey)
		}
		if !rs.Cluster && (rs.Do("EXISTS", tok(i)) != "0" || rs.Do("EXISTS", wire.HashedKey(tok(i))) != "1") {
			t.Errorf("key %d not moved", i)
		}
	}
}

// GET /api/usage finds a key in either form, with its expiry, under either
// storage.
func TestUsageEitherForm(t *testing.T) {
	for _, storage := range []string{"plain", "hashed"} {
		t.Run(storage, func(t *testing.T) {
			rs := redistest.Start(t)
			rs.Do("SET", wire.HashedKey("tok-h"), `{"UserEmail":"h@example.com","MonthlyLimit":100,"Revoked":false}`, "EX", "7200")
			rs.Do("SET", counterNov+"h@example.com", "59")
			rs.Do("SET", "tok-p", `{"UserEmail":"p@example.com","MonthlyLimit":10,"Revoked":false}`)
			rs.Do("SET", wire.HashedKey("tok-r"), `{"UserEmail":"r@example.com","MonthlyLimit":10,"Revoked":true}`)
			app, _ := newTestApp(t, rs, map[string]string{"USAGE_RATE": "1000/s", "USAGE_GLOBAL_RATE": "1000000/s", "KEY_STORAGE": storage}, endOfMonth)
			for tok, want := range map[string]string{
				"tok-h": `{"limit":100,"used":59,"remaining":41,"reset":"2026-12-01T00:00:00Z","expires":"2026-12-01T01:59:00Z"}`,
				"tok-p": `{"limit":10,"used":0,"remaining":10,"reset":"2026-12-01T00:00:00Z"}`,
				"tok-r": `{"message":"Token has been revoked"}`,
				"tok-x": `{"message":"Token not registered"}`,
			} {
				if got := usageCall(t, app, "GET", tokenHeader(tok)); got.Body != want {
					t.Errorf("%s: %d %s, want %s", tok, got.Status, got.Body, want)
				}
			}
		})
	}
}

// The migration under load: while auth replicas (KEY_STORAGE=hashed) answer
// calls on keys, a mover moves them all as registration's migrate-keys does
// (apikey.Move: one script on a single Redis, two steps on a Cluster). No
// call is refused, each is counted once, every record ends hashed with its
// bytes.
func TestMigrationUnderLoad(t *testing.T) {
	rs := redistest.Start(t)
	const keys = 300
	tok := func(i int) string { return "tok-load-" + strconv.Itoa(i) + "-0123456789abcdef" }
	rec := func(i int) string {
		return `{"UserEmail":"l` + strconv.Itoa(i) + `@example.com","MonthlyLimit":100000,"Revoked":false}`
	}
	for i := range keys {
		rs.Do("SET", tok(i), rec(i))
	}
	replicas := []*authInstance{
		startAuth(t, map[string]string{"REDIS_URL": rs.URL, "KEY_STORAGE": "hashed", "LOG_LEVEL": "info"}),
		startAuth(t, map[string]string{"REDIS_URL": rs.URL, "KEY_STORAGE": "hashed", "LOG_LEVEL": "info"}),
	}
	stop := make(chan struct{})
	var mu sync.Mutex
	calls := make([]int, keys)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for n := w; ; n += 8 {
				select {
				case <-stop:
					return
				default:
				}
				i := n % keys
				got := call(t, "GET", replicas[n%2].URL, tok(i))
				if got.Status != 200 {
					t.Errorf("%s: %+v", tok(i), got)
					return
				}
				mu.Lock()
				calls[i]++
				mu.Unlock()
			}
		})
	}
	c := rs.Client()
	for i := range keys {
		if _, err := apikey.Move(context.Background(), c, tok(i)); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	month := wire.CounterKey(time.Now(), "")
	total := 0
	for i := range keys {
		total += calls[i]
		want := ""
		if calls[i] > 0 {
			want = strconv.Itoa(calls[i])
		}
		if got := rs.Do("GET", month+"l"+strconv.Itoa(i)+"@example.com"); got != want {
			t.Errorf("key %d: counter %q, want %q (the 200s)", i, got, want)
		}
		if rs.Do("EXISTS", tok(i)) != "0" || rs.Do("GET", wire.HashedKey(tok(i))) != rec(i) {
			t.Errorf("key %d not moved exactly", i)
		}
	}
	t.Logf("%d calls answered 200 while %d keys moved", total, keys)
}
