package ratelimit

import (
	"context"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"pesto/shared/config"
	"pesto/shared/redistest"
)

// limitsForTest are a route's limits: each client 10/h, all clients 3/h
// (and with proofs, 3/h more).
func limitsForTest() Limits {
	return NewLimits("test", config.Rate{Count: 10, Per: time.Hour}, nil, config.Rate{Count: 3, Per: time.Hour})
}

func allow(t *testing.T, rs *redistest.Server, l Limits, client string, proof *Proof) Outcome {
	t.Helper()
	g, err := l.Allow(context.Background(), rs.Client(), netip.MustParseAddr(client), proof)
	if err != nil {
		t.Fatal(err)
	}
	if (g.Wait == 0) != (g.Outcome == Allowed || g.Outcome == AllowedByProof) {
		t.Fatalf("%+v: a wait with an allowed outcome, or none with a refusal", g)
	}
	return g.Outcome
}

// A refund gives back one request: a global bucket whose requests are all
// given back never fills; the key goes once it is full again. The client's
// own buckets keep them.
func TestRefund(t *testing.T) {
	rs := redistest.Start(t)
	l := limitsForTest()
	for i := range 10 {
		if got := allow(t, rs, l, "192.0.2.1", nil); got != Allowed {
			t.Fatalf("request %d: %v: the global bucket filled up", i+1, got)
		}
		if err := l.Refund(context.Background(), rs.Client(), Grant{Outcome: Allowed}); err != nil {
			t.Fatal(err)
		}
	}
	if got := rs.Do("EXISTS", "pesto:ratelimit:{test}:all"); got != "0" {
		t.Fatal("global bucket key kept after every request was given back")
	}
	if got := allow(t, rs, l, "192.0.2.1", nil); got != RefusedClient {
		t.Fatalf("the client's 11th: %v, want RefusedClient (its bucket keeps what was given back)", got)
	}
	for i, want := range []Outcome{Allowed, Allowed, Allowed, RefusedGlobal} {
		if got := allow(t, rs, l, "192.0.2."+strconv.Itoa(10+i), nil); got != want {
			t.Fatalf("request %d of other clients: %v, want %v", i+1, got, want)
		}
	}
	if err := l.Refund(context.Background(), rs.Client(), Grant{Outcome: Allowed}); err != nil {
		t.Fatal(err)
	}
	if got := allow(t, rs, l, "192.0.2.20", nil); got != Allowed {
		t.Fatalf("after a refund: %v, want Allowed", got)
	}
}

// With the global bucket used up, a request with a proof passes through the
// proven bucket, each proof once, up to its own cap; the client's buckets
// hold whatever it carries; a proof is not spent while the global bucket
// has room.
func TestProvenBucket(t *testing.T) {
	rs := redistest.Start(t)
	l := limitsForTest()
	exp := time.Now().Add(time.Minute)
	proof := func(id string) *Proof { return &Proof{ID: id, Expires: exp} }
	if got := allow(t, rs, l, "192.0.2.1", proof("early")); got != Allowed {
		t.Fatalf("a proof while the global bucket has room: %v", got)
	}
	if rs.Do("EXISTS", "pesto:ratelimit:{test}:proof:early") != "0" {
		t.Fatal("a proof was spent while the global bucket had room")
	}
	for i := range 2 {
		allow(t, rs, l, "192.0.2."+strconv.Itoa(2+i), nil)
	}
	for _, c := range []struct {
		client string
		proof  *Proof
		want   Outcome
	}{
		{"198.51.100.1", nil, RefusedGlobal},
		{"198.51.100.1", proof("a"), AllowedByProof},
		{"198.51.100.2", proof("a"), RefusedGlobal}, // used
		{"198.51.100.2", proof("b"), AllowedByProof},
		{"198.51.100.3", proof("c"), AllowedByProof},
		{"198.51.100.4", proof("d"), RefusedGlobal}, // the proven cap, 3/h, is used up too
	} {
		if got := allow(t, rs, l, c.client, c.proof); got != c.want {
			t.Fatalf("%s with %+v: %v, want %v", c.client, c.proof, got, c.want)
		}
	}
	if ttl, _ := strconv.Atoi(rs.Do("PTTL", "pesto:ratelimit:{test}:proof:a")); ttl < 50_000 || ttl > 60_000 {
		t.Fatalf("a used proof is kept %d ms, want until it expires", ttl)
	}
	// A refund of a proven request goes to the proven bucket.
	if err := l.Refund(context.Background(), rs.Client(), Grant{Outcome: AllowedByProof}); err != nil {
		t.Fatal(err)
	}
	if got := allow(t, rs, l, "198.51.100.5", proof("e")); got != AllowedByProof {
		t.Fatalf("after a proven refund: %v", got)
	}
	// The client's buckets are not passed with a proof.
	tight := NewLimits("tight", config.Rate{Count: 1, Per: time.Hour}, nil, config.Rate{Count: 3, Per: time.Hour})
	allow(t, rs, tight, "192.0.2.99", nil)
	if got := allow(t, rs, tight, "192.0.2.99", proof("f")); got != RefusedClient {
		t.Fatalf("over its client's limit, with a proof: %v, want RefusedClient", got)
	}
}
