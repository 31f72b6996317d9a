package apikey_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"pesto/shared/apikey"
	"pesto/shared/redistest"
	"pesto/shared/wire"
)

// redis is the examples' Redis, emptied before each (fresh).
var redis *redistest.Server

func TestMain(m *testing.M) {
	var stop func()
	redis, stop = redistest.StartMain()
	code := m.Run()
	stop()
	os.Exit(code)
}

// fresh empties the examples' Redis and returns a client to it.
func fresh() (context.Context, rueidis.Client) {
	redis.Do("FLUSHALL")
	return context.Background(), redis.Client()
}

// A record is created in the configured form only: with hashed storage,
// under pesto:key:<SHA-256 of the key>, the same bytes as ever, and the
// marker that says hashed records may exist (wire.HashedKeysMarker) is set.
// A name that exists is never overwritten.
func ExampleKeys_Create() {
	ctx, c := fresh()
	keys := apikey.Keys{Storage: wire.StorageHashed}
	rec := wire.TokenRecord{UserEmail: "jane@example.com", MonthlyLimit: 100}

	created, err := keys.Create(ctx, c, "janes-key", rec, apikey.In(time.Hour))
	fmt.Println(created, err)
	fmt.Println(redis.Keys("*"))
	fmt.Println(redis.Do("GET", wire.HashedKey("janes-key")), redis.Do("TTL", wire.HashedKey("janes-key")))

	created, err = keys.Create(ctx, c, "janes-key", wire.TokenRecord{UserEmail: "joe@example.com"}, apikey.Expiry{})
	fmt.Println(created, err)
	// Output:
	// true <nil>
	// [pesto:hashed-keys pesto:key:Ntso3NJjeMS4rGGftOS4Hf5wWmlYjvZQFU85tEO-XgY]
	// {"UserEmail":"jane@example.com","MonthlyLimit":100,"Revoked":false} 3600
	// false <nil>
}

// A record is found in either form, whatever the storage: its own form
// first. Unknown keys are ErrNotFound.
func ExampleKeys_Record() {
	ctx, c := fresh()
	redis.Do("SET", "legacy-key", `{"email":"old@example.com","limit":5}`) // plaintext, an old shape
	keys := apikey.Keys{Storage: wire.StorageHashed}

	rec, taken, err := keys.Record(ctx, c, "legacy-key")
	fmt.Println(rec.UserEmail, rec.MonthlyLimit, rec.Revoked, taken, err)
	rec, taken, err = keys.Record(ctx, c, "no-such-key")
	fmt.Println(rec, taken, err)

	_, _, err = keys.LookupTTL(ctx, c, "no-such-key")
	fmt.Println(errors.Is(err, apikey.ErrNotFound))
	// Output:
	// old@example.com 5 false true <nil>
	// <nil> false <nil>
	// true
}

// With hashed storage, a lookup that finds a plaintext record moves it to
// its hashed form, value and TTL, in one atomic step (on a single Redis).
func ExampleKeys_Lookup() {
	ctx, c := fresh()
	redis.Do("SET", "legacy-key", `{"UserEmail":"old@example.com","MonthlyLimit":5,"Revoked":false}`, "EX", "600")
	keys := apikey.Keys{Storage: wire.StorageHashed}

	raw, _, err := keys.Lookup(ctx, c, "legacy-key", time.Minute)
	fmt.Println(raw, err)
	fmt.Println(redis.Do("EXISTS", "legacy-key"), redis.Do("TTL", wire.HashedKey("legacy-key")))

	raw, ttl, err := keys.LookupTTL(ctx, c, "legacy-key")
	fmt.Println(raw, ttl.Round(time.Minute), err)
	// Output:
	// {"UserEmail":"old@example.com","MonthlyLimit":5,"Revoked":false} <nil>
	// 0 600
	// {"UserEmail":"old@example.com","MonthlyLimit":5,"Revoked":false} 10m0s <nil>
}

// With plain storage, a lookup through the cache looks at a key's hashed
// name only once hashed records may exist: a record written hashed behind
// the services' back, without the marker, is not found; with it, it is.
func ExampleKeys_Lookup_plain() {
	ctx, c := fresh()
	redis.Do("SET", wire.HashedKey("hashed-key"), `{"UserEmail":"h@example.com","MonthlyLimit":5,"Revoked":false}`)
	keys := apikey.Keys{Storage: wire.StoragePlain}

	_, _, err := keys.Lookup(ctx, c, "hashed-key", time.Minute)
	fmt.Println(err)
	redis.Do("SET", wire.HashedKeysMarker, "1")
	for range 100 { // until the marker's invalidation reaches the cache
		if _, _, err = keys.Lookup(ctx, c, "hashed-key", time.Minute); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	raw, _, err := keys.Lookup(ctx, c, "hashed-key", time.Minute)
	fmt.Println(raw, err)
	// Output:
	// no record under the key
	// {"UserEmail":"h@example.com","MonthlyLimit":5,"Revoked":false} <nil>
}

// Revoke changes every form a key has (both exist for a moment while a
// Cluster's migrate-keys moves it), keeping email, limit and TTL.
func ExampleKeys_Revoke() {
	ctx, c := fresh()
	const rec = `{"UserEmail":"jane@example.com","MonthlyLimit":100,"Revoked":false}`
	redis.Do("SET", "janes-key", rec, "EX", "500")
	redis.Do("SET", wire.HashedKey("janes-key"), rec, "EX", "500")
	keys := apikey.Keys{Storage: wire.StoragePlain}

	fmt.Println(keys.Revoke(ctx, c, "janes-key"))
	for _, name := range []string{"janes-key", wire.HashedKey("janes-key")} {
		fmt.Println(redis.Do("GET", name), redis.Do("TTL", name))
	}
	fmt.Println(keys.Revoke(ctx, c, "no-such-key"))
	// Output:
	// <nil>
	// {"UserEmail":"jane@example.com","MonthlyLimit":100,"Revoked":true} 500
	// {"UserEmail":"jane@example.com","MonthlyLimit":100,"Revoked":true} 500
	// no record under the key
}

// A key's life is shortened, never lengthened: a form that expires sooner
// keeps its own expiry.
func ExampleFound_ShortenTTL() {
	ctx, c := fresh()
	redis.Do("SET", "forever-key", `{"UserEmail":"a@example.com","MonthlyLimit":1,"Revoked":false}`)
	redis.Do("SET", "soon-key", `{"UserEmail":"b@example.com","MonthlyLimit":1,"Revoked":false}`, "EX", "60")
	keys := apikey.Keys{Storage: wire.StoragePlain}

	for _, token := range []string{"forever-key", "soon-key"} {
		found, _ := keys.Find(ctx, c, token)
		fmt.Println(found.ShortenTTL(ctx, c, time.Hour), redis.Do("TTL", token))
	}
	// Output:
	// <nil> 3600
	// <nil> 60
}

// An unfinished approval's key is deleted only while it still holds the
// record of the person it was made for.
func ExampleKeys_DeleteIfOwner() {
	ctx, c := fresh()
	redis.Do("SET", "janes-key", `{"UserEmail":"jane@example.com","MonthlyLimit":100,"Revoked":false}`)
	keys := apikey.Keys{Storage: wire.StoragePlain}

	fmt.Println(keys.DeleteIfOwner(ctx, c, "janes-key", "joe@example.com"))
	fmt.Println(keys.DeleteIfOwner(ctx, c, "janes-key", " JANE@example.com"))
	fmt.Println(redis.Keys("*"))
	// Output:
	// false <nil>
	// true <nil>
	// []
}

// Move moves a plaintext record to its hashed form: the same bytes and TTL,
// nothing left under the key, and the marker set; moving it again moves
// nothing.
func ExampleMove() {
	ctx, c := fresh()
	redis.Do("SET", "legacy-key", `{"UserEmail":"old@example.com","MonthlyLimit":5,"Revoked":false}`, "EX", "600")

	fmt.Println(apikey.Move(ctx, c, "legacy-key"))
	fmt.Println(redis.Keys("*"), redis.Do("TTL", wire.HashedKey("legacy-key")))
	fmt.Println(apikey.Move(ctx, c, "legacy-key"))
	// Output:
	// true <nil>
	// [pesto:hashed-keys pesto:key:lO63u-l53Q0vC7CFFyt2obyeYXiYOUgINKm8tar5xu8] 600
	// false <nil>
}
