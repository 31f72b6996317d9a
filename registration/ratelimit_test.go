package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"pesto/registration/internal/proof"
	"pesto/shared/redistest"
)

const tooMany = `{"message":"Too many requests"}`

// The limit is shared by every instance on one Redis.
func TestRateLimitSharedAcrossInstances(t *testing.T) {
	rs := redistest.Start(t)
	env := map[string]string{"REDIS_URL": rs.URL, "TRIAL_RATE": "3/h", "REGISTER_RATE": "2/m"}
	a, _ := startRegistration(t, env)
	b, _ := startRegistration(t, env)

	for i, base := range []string{a, b, a} {
		if r := send(t, "POST", base+"/api/trial", ""); r.status != 200 {
			t.Fatalf("trial %d: got %d %s", i+1, r.status, r.body)
		}
	}
	for _, base := range []string{b, a} {
		r := send(t, "POST", base+"/api/trial", "")
		r.want(t, 429, tooMany)
		// 3/h: the next one is allowed 20 minutes after the burst.
		if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1100 || s > 1200 {
			t.Fatalf("Retry-After %q, want about 1200", r.header.Get("Retry-After"))
		}
	}
	if got := strconv.Itoa(len(rs.Keys("TRIAL-*"))); got != "3" {
		t.Fatalf("%s trial keys, want 3", got)
	}

	// Register has its own limit; invalid requests do not use it up, and a
	// refused signup stores nothing.
	for range 5 {
		send(t, "POST", a+"/api/register", `{"name":"","email":"a@b.co","calls":1}`).want(t, 400, `{"message":"`+msgName+`"}`)
	}
	send(t, "POST", a+"/api/register", `{"name":"a","email":"a@b.co","calls":1}`).want(t, 201, created)
	send(t, "POST", b+"/api/register", `{"name":"b","email":"b@b.co","calls":1}`).want(t, 201, created)
	r := send(t, "POST", a+"/api/register", `{"name":"c","email":"c@b.co","calls":1}`)
	r.want(t, 429, tooMany)
	if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 || s > 30 {
		t.Fatalf("Retry-After %q, want 1..30", r.header.Get("Retry-After"))
	}
	if got := rs.Do("LLEN", "waiting-list"); got != "2" {
		t.Fatalf("LLEN = %s, want 2", got)
	}
}

// Behind a trusted proxy the client is the rightmost X-Forwarded-For hop
// that is not a trusted proxy; values left of it are the client's to forge.
func TestRateLimitClientIP(t *testing.T) {
	rs := redistest.Start(t)
	trusting, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "TRIAL_RATE": "1/h",
		"TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8"})
	direct, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "TRIAL_RATE": "1/h"})
	key := func(ip string) string { return "pesto:ratelimit:{trial}:" + ip }
	trial := func(base string, xff ...string) int {
		var h []string
		for _, v := range xff {
			h = append(h, "X-Forwarded-For", v)
		}
		return send(t, "POST", base+"/api/trial", "", h...).status
	}

	for _, c := range []struct {
		name   string
		base   string
		xff    string
		want   int
		client string // whose limit the request counts against
	}{
		{"one hop", trusting, "203.0.113.5", 200, "203.0.113.5"},
		{"same client again", trusting, "203.0.113.5", 429, "203.0.113.5"},
		{"another client", trusting, "203.0.113.6", 200, "203.0.113.6"},
		{"forged leftmost", trusting, "203.0.113.99, 203.0.113.5", 429, "203.0.113.5"},
		{"forged leftmost, trusted hops", trusting, "1.2.3.4, 198.51.100.7, 10.1.2.3, 10.9.9.9", 200, "198.51.100.7"},
		{"with port", trusting, "198.51.100.7:4711", 429, "198.51.100.7"},
		{"IPv6 /64", trusting, "2001:db8:1:2::1", 200, "2001:db8:1:2::/64"},
		{"IPv6 same /64", trusting, "[2001:db8:1:2:ffff::9]", 429, "2001:db8:1:2::/64"},
		{"garbage hop stops the walk", trusting, "198.51.100.8, nonsense", 200, "127.0.0.1"},
		{"no header", trusting, "", 429, "127.0.0.1"},
		{"untrusted peer's header ignored", direct, "192.0.2.1", 429, "127.0.0.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var xff []string
			if c.xff != "" {
				xff = []string{c.xff}
			}
			if got := trial(c.base, xff...); got != c.want {
				t.Fatalf("got %d, want %d", got, c.want)
			}
			if rs.Do("EXISTS", key(c.client)) != "1" {
				t.Fatalf("no rate-limit key for %s", c.client)
			}
		})
	}
	if rs.Do("EXISTS", key("203.0.113.99")) != "0" || rs.Do("EXISTS", key("1.2.3.4")) != "0" || rs.Do("EXISTS", key("192.0.2.1")) != "0" {
		t.Fatal("a forged address was believed")
	}
}

// An IPv6 client counts against its /64, /56 and /48 together, each with
// its own allowance (IPV6_RATE_PREFIXES 64:1,56:2,48:4 by default): a /48
// gets four times the rate of one /64, however many /64s it uses.
func TestRateLimitIPv6Prefixes(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "TRIAL_RATE": "1/h", "TRUSTED_PROXIES": "127.0.0.1"})
	trial := func(ip string) response { return send(t, "POST", base+"/api/trial", "", "X-Forwarded-For", ip) }
	for _, c := range []struct {
		ip   string
		want int
	}{
		{"2001:db8:1:100::1", 200},
		{"2001:db8:1:100::2", 429},  // its /64 is used up
		{"2001:db8:1:101::1", 200},  // another /64 of the same /56
		{"2001:db8:1:102::1", 429},  // that /56 is used up (2)
		{"2001:db8:1:200::1", 200},  // another /56 of the same /48
		{"2001:db8:1:ff00::1", 200}, // the /48's fourth
		{"2001:db8:1:fe00::1", 429}, // that /48 is used up (4)
		{"2001:db8:2::1", 200},      // another /48
		{"192.0.2.1", 200},          // IPv4: the address alone
		{"192.0.2.1", 429},
		{"192.0.2.2", 200},
	} {
		if r := trial(c.ip); r.status != c.want {
			t.Fatalf("%s: got %d %s, want %d", c.ip, r.status, r.body, c.want)
		} else if c.want == 429 {
			r.want(t, 429, tooMany)
		}
	}
	// A refused request counts nowhere: the buckets are those of the six
	// allowed IPv6 requests and the two IPv4 ones. (The global cap's key,
	// at the tests' 1000000/s, expires within a millisecond or two: whether
	// it is still there depends on the machine's speed, so it is left out.)
	p := "pesto:ratelimit:{trial}:"
	want := []string{p + "192.0.2.1", p + "192.0.2.2",
		p + "2001:db8:1:100::/56", p + "2001:db8:1:100::/64", p + "2001:db8:1:101::/64", p + "2001:db8:1:200::/56",
		p + "2001:db8:1:200::/64", p + "2001:db8:1::/48", p + "2001:db8:1:ff00::/56", p + "2001:db8:1:ff00::/64",
		p + "2001:db8:2::/48", p + "2001:db8:2::/56", p + "2001:db8:2::/64"}
	slices.Sort(want)
	if got := slices.DeleteFunc(keysButGlobalCaps(rs), func(k string) bool { return !strings.HasPrefix(k, p) }); !slices.Equal(got, want) {
		t.Fatalf("buckets:\n got %q\nwant %q", got, want)
	}
	// Each bucket expires when it is back to a full burst: within the hour
	// of its rate (the /48: 4/h, so a quarter of an hour per request).
	for _, k := range want {
		if ttl, _ := strconv.Atoi(rs.Do("PTTL", k)); ttl < 1 || ttl > 3600_000 {
			t.Fatalf("PTTL %s = %d", k, ttl)
		}
	}

	// The attack: twenty /64s of one /48 get four trial keys.
	rs.Do("FLUSHALL")
	ok := 0
	for i := range 20 {
		if trial("2001:db8:9:"+strconv.FormatInt(int64(i)<<8, 16)+"::1").status == 200 {
			ok++
		}
	}
	if ok != 4 {
		t.Fatalf("%d of 20 /64s of one /48 got a trial key, want 4", ok)
	}
}

// TRIAL_GLOBAL_RATE and REGISTER_GLOBAL_RATE cap each route over every
// client together, in the same script call as the per-client limits.
func TestRateLimitGlobal(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "TRUSTED_PROXIES": "127.0.0.1", "IPV6_RATE_PREFIXES": "64:1",
		"TRIAL_RATE": "1/h", "TRIAL_GLOBAL_RATE": "3/h", "REGISTER_RATE": "1/h", "REGISTER_GLOBAL_RATE": "2/h"})
	for i := range 5 {
		r := send(t, "POST", base+"/api/trial", "", "X-Forwarded-For", "198.51.100."+strconv.Itoa(i+1))
		if i < 3 {
			if r.status != 200 {
				t.Fatalf("trial %d: got %d %s", i+1, r.status, r.body)
			}
			continue
		}
		r.want(t, 429, tooMany)
		if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1100 || s > 1200 {
			t.Fatalf("Retry-After %q, want about 1200 (3/h)", r.header.Get("Retry-After"))
		}
	}
	if n := len(rs.Keys("TRIAL-*")); n != 3 {
		t.Fatalf("%d trial keys, want 3", n)
	}
	for i := range 4 {
		body := `{"name":"a","email":"a` + strconv.Itoa(i) + `@b.co","calls":1}`
		r := send(t, "POST", base+"/api/register", body, "X-Forwarded-For", "2001:db8:"+strconv.Itoa(i+1)+"::1")
		if i < 2 {
			r.want(t, 201, created)
		} else {
			r.want(t, 429, tooMany)
		}
	}
	if got := rs.Do("LLEN", "waiting-list"); got != "2" {
		t.Fatalf("LLEN = %s, want 2", got)
	}
	// A refused request is not counted by its client's buckets either.
	if rs.Do("EXISTS", "pesto:ratelimit:{trial}:198.51.100.4") != "0" || rs.Do("EXISTS", "pesto:ratelimit:{register}:2001:db8:3::/64") != "0" {
		t.Fatal("a refused request was counted")
	}
}

// A high rate keeps its spacing: TRIAL_RATE 200000/s (under the global
// 1000000/s) allows a burst far beyond a thousand calls (the limiter works
// in microseconds).
func TestRateLimitHighRate(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "TRIAL_RATE": "200000/s"})
	const calls, workers = 3000, 16
	refused := make(chan int, workers)
	for w := 0; w < workers; w++ {
		go func() {
			n := 0
			for i := 0; i < calls/workers; i++ {
				if r := send(t, "POST", base+"/api/trial", ""); r.status == 429 {
					n++
				}
			}
			refused <- n
		}()
	}
	total := 0
	for w := 0; w < workers; w++ {
		total += <-refused
	}
	if total != 0 {
		t.Fatalf("%d of %d calls answered 429 at 200000/s", total, calls/workers*workers)
	}
}

// The attack: a handful of clients send signups of one listed person (each
// answered 202, nothing stored) as fast as their own limits let them. When
// those counted against the global cap, ten IPv4 clients at 4 requests a
// second held it for everyone (24 of 24 real signups refused in 72 s). A
// request that stores nothing now gives its global allowance back: the
// people signing up meanwhile all get in. (Time is compressed: each client
// 1/s, the cap 8/s, ten clients at 4 requests a second for 3 s.)
func TestDuplicatesSpendNoGlobalBudget(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "TRUSTED_PROXIES": "127.0.0.1",
		"REGISTER_RATE": "1/s", "REGISTER_GLOBAL_RATE": "8/s"})
	signup := func(client, email string) response {
		return send(t, "POST", base+"/api/register", `{"name":"a","email":"`+email+`","calls":1}`, "X-Forwarded-For", client)
	}
	signup("192.0.2.1", "listed@example.com").want(t, 201, created)

	stop := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	answers := map[int]int{}
	for c := range 10 {
		wg.Go(func() {
			tick := time.NewTicker(250 * time.Millisecond) // 4 requests a second
			defer tick.Stop()
			for time.Now().Before(stop) {
				r := signup(fmt.Sprintf("198.51.100.%d", c+1), "LISTED@example.com")
				mu.Lock()
				answers[r.status]++
				mu.Unlock()
				<-tick.C
			}
		})
	}
	refused := 0
	const people = 6
	for i := range people {
		time.Sleep(400 * time.Millisecond) // people arrive while it goes on
		if r := signup(fmt.Sprintf("203.0.113.%d", i+1), fmt.Sprintf("person%d@example.com", i)); r.status != 201 {
			refused++
			t.Logf("person %d: %d %s, Retry-After %s", i, r.status, r.body, r.header.Get("Retry-After"))
		}
	}
	wg.Wait()
	t.Logf("the duplicates' answers: %v", answers)
	if refused > 0 {
		t.Fatalf("%d of %d people refused while duplicates were sent", refused, people)
	}
	for status := range answers {
		if status != 202 && status != 429 || answers[202] == 0 {
			t.Fatalf("the duplicates' answers: %v, want 202s and 429s", answers)
		}
	}
	if got := rs.Do("LLEN", "waiting-list"); got != strconv.Itoa(1+people) {
		t.Fatalf("LLEN = %s, want %d", got, 1+people)
	}
}

// The attack: about 200 trial keys from 40 addresses use up TRIAL_GLOBAL_RATE
// (200/h), and every new person is refused for the hour. Now the 429 of a
// global cap carries a challenge (X-Pesto-Challenge): a request with its
// answer (X-Pesto-Proof, about a second of a browser's work) passes through
// a second cap as large, each answer once. The flooding addresses, at
// their own limits, get nothing more with answers; a person's plain
// request gets in again once the flood stops and the cap refills.
func TestTrialsAvailableWithProofOfWork(t *testing.T) {
	rs := redistest.Start(t)
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "TRUSTED_PROXIES": "127.0.0.1",
		"TRIAL_RATE": "5/h", "TRIAL_GLOBAL_RATE": "200/h"})
	trial := func(client string, headers ...string) response {
		return send(t, "POST", base+"/api/trial", "", append([]string{"X-Forwarded-For", client}, headers...)...)
	}
	got := map[int]int{}
	for i := range 40 {
		for range 6 {
			got[trial(fmt.Sprintf("198.51.100.%d", i+1)).status]++
		}
	}
	if got[200] != 200 || got[429] != 40 {
		t.Fatalf("40 addresses × 6 trials: %v, want 200 keys and 40 refusals", got)
	}

	// A person, plain: refused by the global cap, with a challenge.
	r := trial("203.0.113.7")
	r.want(t, 429, tooMany)
	challenge := r.header.Get("X-Pesto-Challenge")
	if !strings.HasPrefix(challenge, strconv.Itoa(proof.Bits)+".") {
		t.Fatalf("X-Pesto-Challenge %q", challenge)
	}
	answer := proof.Solve(challenge)
	r = trial("203.0.113.7", "X-Pesto-Proof", answer)
	if r.status != 200 || !strings.HasPrefix(r.body, `{"token":"TRIAL-`) {
		t.Fatalf("with the answer: %d %s", r.status, r.body)
	}
	// Each answer once; an answer for another route, or made up, is no use.
	trial("203.0.113.8", "X-Pesto-Proof", answer).want(t, 429, tooMany)
	other := send(t, "POST", base+"/api/register", `{"name":"a","email":"a@b.co","calls":1}`, "X-Forwarded-For", "203.0.113.9",
		"X-Pesto-Proof", answer)
	if other.status != 201 { // register's own cap is not used up: the answer is ignored
		t.Fatalf("register with a trial's answer: %d %s", other.status, other.body)
	}
	r = trial("203.0.113.8", "X-Pesto-Proof", challenge+".12345")
	r.want(t, 429, tooMany)
	if r := trial("203.0.113.8", "X-Pesto-Proof", proof.Solve(r.header.Get("X-Pesto-Challenge"))); r.status != 200 {
		t.Fatalf("a second person with a fresh answer: %d %s", r.status, r.body)
	}

	// A flooding address is held by its own limit: no challenge, and an
	// answer does not help it.
	r = trial("198.51.100.1", "X-Pesto-Proof", proof.Solve(challenge))
	r.want(t, 429, tooMany)
	if r.header.Get("X-Pesto-Challenge") != "" {
		t.Fatal("a client over its own limit was given a challenge")
	}
	if n := len(rs.Keys("TRIAL-*")); n != 202 {
		t.Fatalf("%d trial keys, want 202", n)
	}
}
