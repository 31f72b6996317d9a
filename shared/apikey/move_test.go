package apikey

import (
	"context"
	"sync"
	"testing"
	"time"

	"pesto/shared/redistest"
	"pesto/shared/wire"
)

const record = `{"UserEmail":"jane@example.com","MonthlyLimit":100,"Revoked":false}`

// A move leaves the same bytes and TTL under the hashed name and nothing
// under the token, on a single Redis and on a Cluster (PESTO_REDIS).
func TestMove(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client()
	ctx := context.Background()
	const forever, expiring = "key-without-expiry-0123456789", "key-with-expiry-0123456789"
	rs.Do("SET", forever, record)
	rs.Do("SET", expiring, record, "PX", "3600000")
	for _, tok := range []string{forever, expiring} {
		moved, err := Move(ctx, c, tok)
		if err != nil || !moved {
			t.Fatalf("%s: moved %v, %v", tok, moved, err)
		}
		if got := rs.Do("EXISTS", tok); got != "0" {
			t.Errorf("%s: plaintext still there", tok)
		}
		if got := rs.Do("GET", wire.HashedKey(tok)); got != record {
			t.Errorf("%s: hashed form holds %q", tok, got)
		}
		moved, err = Move(ctx, c, tok)
		if err != nil || moved {
			t.Errorf("%s: second move: %v, %v", tok, moved, err)
		}
	}
	if got := rs.Do("PTTL", wire.HashedKey(forever)); got != "-1" {
		t.Errorf("TTL of a key without expiry: %s", got)
	}
	if ttl := rs.Do("PTTL", wire.HashedKey(expiring)); ttl < "3500000" || len(ttl) != 7 {
		t.Errorf("TTL of an expiring key: %s", ttl)
	}

	// The two-step move, here too.
	rs.Do("SET", forever, record)
	if moved, err := MoveTwoStep(ctx, c, forever); err != nil || !moved {
		t.Fatalf("two-step: %v, %v", moved, err)
	}
	if rs.Do("EXISTS", forever) != "0" || rs.Do("GET", wire.HashedKey(forever)) != record {
		t.Fatal("two-step move left the wrong keys")
	}
}

// Movers racing move a record once, and every reader of the order of
// lookup finds it throughout.
func TestRacingMovesNeverLoseTheRecord(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client()
	ctx := context.Background()
	for i := range 50 {
		tok := "racing-key-" + string(rune('A'+i%26)) + time.Now().Format("150405.000000000")
		rs.Do("SET", tok, record)
		var wg sync.WaitGroup
		moves := make(chan bool, 4)
		for range 4 {
			wg.Go(func() {
				moved, err := Move(ctx, c, tok)
				if err != nil {
					t.Error(err)
				}
				moves <- moved
			})
		}
		stop := make(chan struct{})
		var readers sync.WaitGroup
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				// The readers of the one order of lookup that move nothing
				// find it (Lookup, which moves too, is auth's: its tests).
				keys := Keys{Storage: wire.StorageHashed}
				if _, _, err := keys.LookupTTL(ctx, c, tok); err != nil {
					t.Errorf("%s: LookupTTL: %v", tok, err)
					return
				}
				if found, err := keys.Find(ctx, c, tok); err != nil || len(found) == 0 {
					t.Errorf("%s found in neither form: %v", tok, err)
					return
				}
			}
		})
		wg.Wait()
		close(stop)
		readers.Wait()
		close(moves)
		n := 0
		for m := range moves {
			if m {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%s moved %d times", tok, n)
		}
		if rs.Do("GET", wire.HashedKey(tok)) != record || rs.Do("EXISTS", tok) != "0" {
			t.Fatalf("%s: wrong keys after the race", tok)
		}
	}
}

// A two-step move whose plaintext changed (a revoke) since an earlier
// attempt copied it leaves the change, not the stale copy.
func TestTwoStepMoveFollowsChanges(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client()
	ctx := context.Background()
	const tok = "changing-key-0123456789"
	hashed := wire.HashedKey(tok)
	revoked := `{"UserEmail":"jane@example.com","MonthlyLimit":100,"Revoked":true}`

	// Changed: the copy is stale; the delete refuses; the next attempt copies the change.
	rs.Do("SET", hashed, record) // a first attempt's copy
	rs.Do("SET", tok, revoked)
	if moved, err := MoveTwoStep(ctx, c, tok); err != nil || !moved {
		t.Fatal(moved, err)
	}
	if got := rs.Do("GET", hashed); got != revoked {
		t.Fatalf("hashed holds %q", got)
	}
}
