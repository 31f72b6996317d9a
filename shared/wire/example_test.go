package wire_test

import (
	"errors"
	"fmt"
	"time"

	"pesto/shared/wire"
)

// A token record is written in the one canonical form every service writes.
func ExampleTokenRecord_Encode() {
	r := wire.TokenRecord{UserEmail: "johndoe@example.com", MonthlyLimit: 100}
	fmt.Println(string(r.Encode()))
	// Output: {"UserEmail":"johndoe@example.com","MonthlyLimit":100,"Revoked":false}
}

// Records are read tolerantly: the lower-case aliases an old admin payload
// stored, a missing Revoked and unknown fields are all accepted; anything
// that is not such an object is ErrCorrupt.
func ExampleDecodeTokenRecord() {
	for _, raw := range []string{
		`{"UserEmail":"johndoe@example.com","MonthlyLimit":100,"Revoked":true}`,
		`{"email":"jane@example.com","limit":5,"token":"abc","note":"ignored"}`,
		`"johndoe@example.com"`,
	} {
		r, err := wire.DecodeTokenRecord(raw)
		if errors.Is(err, wire.ErrCorrupt) {
			fmt.Println("corrupt")
			continue
		}
		fmt.Printf("%s limit=%d revoked=%v\n", r.UserEmail, r.MonthlyLimit, r.Revoked)
	}
	// Output:
	// johndoe@example.com limit=100 revoked=true
	// jane@example.com limit=5 revoked=false
	// corrupt
}

// A counter key names the UTC month of the call, whatever the time zone.
func ExampleCounterKey() {
	at := time.Date(2026, 2, 28, 23, 30, 0, 0, time.FixedZone("UTC-1", -3600))
	fmt.Println(wire.CounterKey(at, "johndoe@example.com"))
	fmt.Println(wire.NextMonth(at).Format(time.RFC3339))
	// Output:
	// counter/2026-03/johndoe@example.com
	// 2026-04-01T00:00:00Z
}

// A waiting-list element is written as every service writes it and read as
// any of them wrote it (the Rust service wrote a null building).
func ExampleDecodeSignup() {
	s := wire.Signup{Name: "Jane", Email: "jane@example.com", Building: "a bot", Calls: 1000}
	fmt.Println(string(s.Encode()))

	old, _ := wire.DecodeSignup(`{"name":"Joe","email":"joe@example.com","building":null,"calls":10}`)
	fmt.Printf("%s %q %d\n", old.Email, old.Building, old.Calls)
	// Output:
	// {"name":"Jane","email":"jane@example.com","building":"a bot","calls":1000}
	// joe@example.com "" 10
}

// Only well-formed tokens are ever looked up or stored.
func ExampleWellFormedToken() {
	for _, token := range []string{"Zk3p9Q", "two words", "counter/2026-03/jane@example.com", ""} {
		fmt.Println(wire.WellFormedToken(token))
	}
	// Output:
	// true
	// false
	// false
	// false
}

// With KEY_STORAGE=hashed a record is stored under the SHA-256 of its key,
// never the key itself.
func ExampleHashedKey() {
	fmt.Println(wire.HashedKey("johndoe-key"))
	// Output: pesto:key:hR89ereZq6g0ITpjozLrJhQ32LllorvChvZzkwjNSTg
}
