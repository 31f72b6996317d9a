package ratelimit

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"pesto/shared/config"
	"pesto/shared/redistest"
)

// A refund gives back one request: a bucket used up by requests that are
// all given back allows as many again; the key goes once the bucket is
// full again.
func TestRefund(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client()
	ctx := context.Background()
	l := NewLimits("test", config.Rate{Count: 10, Per: time.Hour}, nil, config.Rate{Count: 3, Per: time.Hour})
	key, args := l.Global()
	allow := func(client string) int64 {
		t.Helper()
		keys, args := l.Buckets(netip.MustParseAddr(client))
		wait, err := Allow(ctx, c, keys, args)
		if err != nil {
			t.Fatal(err)
		}
		return wait
	}
	for i := range 20 { // each given back: the global bucket never fills
		if wait := allow("192.0.2.1"); wait != 0 && i < 10 {
			t.Fatalf("request %d refused (%d ms): the global bucket filled up", i+1, wait)
		}
		if err := Refund(ctx, c, key, args); err != nil {
			t.Fatal(err)
		}
	}
	if got := rs.Do("EXISTS", key); got != "0" {
		t.Fatalf("global bucket key kept after every request was given back")
	}
	// The client's own bucket kept them: 10 of 20, then refused.
	if wait := allow("192.0.2.1"); wait == 0 {
		t.Fatal("the client's bucket was given back too")
	}
	for i, want := range []bool{true, true, true, false} { // three, from other clients
		if got := allow("192.0.2."+string(rune('2'+i))) == 0; got != want {
			t.Fatalf("request %d of other clients: allowed %v, want %v", i+1, got, want)
		}
	}
	if err := Refund(ctx, c, key, args); err != nil {
		t.Fatal(err)
	}
	if allow("192.0.2.9") != 0 {
		t.Fatal("a request given back is not allowed again")
	}
}
