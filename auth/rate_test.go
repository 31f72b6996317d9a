package main

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v3"
	"github.com/redis/rueidis"

	"pesto/shared/redistest"
	"pesto/shared/servicetest"
	"pesto/shared/wire"
)

const tooManyRequests = `{"message":"Too many requests"}`

// timedAnswer is an answer and when its request was sent and answered.
type timedAnswer struct {
	answer
	sent, got time.Time
}

// callAt sends the hook request to url and times it.
func callAt(t *testing.T, url, token string) timedAnswer {
	sent := time.Now()
	a := call(t, "GET", url, token)
	return timedAnswer{a, sent, time.Now()}
}

// checkRateRefusal wants the answer of a call refused by a rate of a
// second: 429 Too many requests, X-Pesto-Error, Retry-After 1.
func checkRateRefusal(t *testing.T, a answer) {
	t.Helper()
	if a.Status != 429 || a.Body != tooManyRequests || a.Header.Get("X-Pesto-Error") != "Too many requests" ||
		a.Header.Get("Retry-After") != "1" || a.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("got %d %q %v, want 429 Too many requests with Retry-After 1", a.Status, a.Body, a.Header)
	}
}

// windowViolation returns n+1 of the 200s that were surely let through
// within one window of per: all of them sent after the first was sent and
// answered before per had passed since (whatever Redis's clock said
// exactly, their decisions fell within less than per). nil when none are.
func windowViolation(allowed []timedAnswer, n int, per time.Duration) []timedAnswer {
	slices.SortFunc(allowed, func(a, b timedAnswer) int { return a.sent.Compare(b.sent) })
	for i, first := range allowed {
		var inside []timedAnswer
		for _, a := range allowed[i:] {
			if a.got.Before(first.sent.Add(per)) {
				inside = append(inside, a)
			}
		}
		if len(inside) > n {
			return inside
		}
	}
	return nil
}

// The test: a key with a rate of N a second, called by many clients
// through two auth replicas on one Redis (a Cluster under
// PESTO_REDIS=cluster), gets exactly N calls answered 200 at once and
// never more than N in any second, every other call 429 Too many requests
// with Retry-After 1, and its monthly counter counts the 200s only.
func TestRateExactAcrossReplicas(t *testing.T) {
	rs := redistest.Start(t)
	const n, token, email = 5, "tok-rate", "rate@example.com"
	rs.Do("SET", token, `{"UserEmail":"`+email+`","MonthlyLimit":1000000,"Revoked":false,"Rate":"5/s"}`)
	env := map[string]string{"REDIS_URL": rs.URL, "LOG_LEVEL": "warn"} // KEY_RATE off: the record's own rate
	replicas := []string{startAuth(t, env).URL, startAuth(t, env).URL}
	for _, url := range replicas { // the record in each replica's cache, and a rate spent
		if a := callAt(t, url, token); a.Status != 200 {
			t.Fatalf("first call: %+v", a)
		}
	}

	var (
		mu      sync.Mutex
		allowed []timedAnswer
		refused int
	)
	record := func(a timedAnswer) {
		mu.Lock()
		defer mu.Unlock()
		switch a.Status {
		case 200:
			allowed = append(allowed, a)
		default:
			checkRateRefusal(t, a.answer)
			refused++
		}
	}

	// Many calls at once, once the window is empty again: exactly n let
	// through when they are all answered within the second.
	servicetest.Poll(t, 5*time.Second, "the window empty again", func() bool {
		return rateRoom(t, rs, wire.CounterKey(time.Now(), email), wire.Rate{Count: n, Per: time.Second}) == n
	})
	var burst []timedAnswer
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			a := callAt(t, replicas[i%2], token)
			mu.Lock()
			burst = append(burst, a)
			mu.Unlock()
		})
	}
	wg.Wait()
	first, last := burst[0].sent, burst[0].got
	burstAllowed := 0
	for _, a := range burst {
		if a.sent.Before(first) {
			first = a.sent
		}
		if a.got.After(last) {
			last = a.got
		}
		if a.Status == 200 {
			burstAllowed++
		}
		record(a)
	}
	if last.Sub(first) < 900*time.Millisecond && burstAllowed != n {
		t.Errorf("%d of 40 calls at once let through, want %d", burstAllowed, n)
	}

	// Calls as fast as 8 clients make them, through both replicas, for 2.5 s.
	start := time.Now()
	for w := range 8 {
		wg.Go(func() {
			for i := 0; time.Since(start) < 2500*time.Millisecond; i++ {
				record(callAt(t, replicas[(w+i)%2], token))
			}
		})
	}
	wg.Wait()
	took := time.Since(start)

	if v := windowViolation(slices.Clone(allowed), n, time.Second); v != nil {
		t.Errorf("%d calls let through within one second (want at most %d): sent %v … answered %v", len(v), n, v[0].sent, v[len(v)-1].got)
	}
	flood := 0
	for _, a := range allowed {
		if !a.sent.Before(start) {
			flood++
		}
	}
	if min := n * int(took/time.Second); flood < min {
		t.Errorf("%d calls let through in %v of calls as fast as they come, want at least %d", flood, took, min)
	}
	if refused == 0 {
		t.Error("no call refused")
	}
	if got, want := rs.Do("GET", wire.CounterKey(time.Now(), email)), strconv.Itoa(2+len(allowed)); got != want {
		t.Errorf("counter = %s, want %s: the calls answered 200", got, want)
	}
	t.Logf("%d let through and %d refused in %v, %d at once of 40", flood, refused, took.Round(time.Millisecond), burstAllowed)
}

// The answers of a key with a rate, on 200 and 429, byte for byte: both
// policies in RateLimit-Policy and RateLimit, the one closer to refusing
// first; the legacy RateLimit-* are the month's; a call refused by the rate
// is 429 Too many requests with Retry-After, and spends no monthly quota.
func TestRateAnswers(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok-own", `{"UserEmail":"own@example.com","MonthlyLimit":100,"Revoked":false,"Rate":"2/s"}`)
	rs.Do("SET", "tok-month", `{"UserEmail":"month@example.com","MonthlyLimit":2,"Revoked":false,"Rate":"5/s"}`)
	rs.Do("SET", "tok-burst", `{"UserEmail":"burst@example.com","MonthlyLimit":100,"Revoked":false,"Rate":"60/m;burst=2"}`)
	rs.Do("SET", "tok-default", `{"UserEmail":"default@example.com","MonthlyLimit":100,"Revoked":false}`)
	rs.Do("SET", "tok-off", `{"UserEmail":"off@example.com","MonthlyLimit":100,"Revoked":false,"Rate":"off"}`)
	rs.Do("SET", "tok-zero", `{"UserEmail":"zero@example.com","MonthlyLimit":0,"Revoked":false,"Rate":"5/s"}`)
	rs.Do("SET", "tok-both", `{"UserEmail":"both@example.com","MonthlyLimit":1,"Revoked":false,"Rate":"1/m"}`)
	rs.Do("SET", "tok-bad-rate", `{"UserEmail":"bad@example.com","MonthlyLimit":1,"Revoked":false,"Rate":"fast"}`)
	app, _ := newTestApp(t, rs, map[string]string{"KEY_RATE": "3/m"}, endOfMonth) // November: 2592000 s, 60 s left

	type want struct {
		status                    int
		body                      string
		remaining, policy, fields string // RateLimit-Remaining, RateLimit-Policy, RateLimit
		retryAfter                string
	}
	allowed := func(remaining, policy, fields string) want { return want{200, "", remaining, policy, fields, ""} }
	const (
		ownPolicy     = `"rate";q=2;w=1, "monthly";q=100;w=2592000`
		monthPolicy   = `"monthly";q=2;w=2592000, "rate";q=5;w=1`
		burstPolicy   = `"rate";q=60;w=60;pesto-burst=2, "monthly";q=100;w=2592000`
		defaultPolicy = `"rate";q=3;w=60, "monthly";q=100;w=2592000`
	)
	for _, c := range []struct {
		name, token string
		want        want
	}{
		{"own rate", "tok-own", allowed("99", ownPolicy, `"rate";r=1;t=1, "monthly";r=99;t=60`)},
		{"own rate, last", "tok-own", allowed("98", ownPolicy, `"rate";r=0;t=1, "monthly";r=98;t=60`)},
		{"own rate, over", "tok-own", want{429, tooManyRequests, "98", ownPolicy, `"rate";r=0;t=1, "monthly";r=98;t=60`, "1"}},
		{"the month closer to refusing", "tok-month", allowed("1", monthPolicy, `"monthly";r=1;t=60, "rate";r=4;t=1`)},
		{"the month closer, last", "tok-month", allowed("0", monthPolicy, `"monthly";r=0;t=60, "rate";r=3;t=1`)},
		{"month used up: the month's 429", "tok-month", want{429, `{"message":"Monthly limit exceeded"}`, "0", monthPolicy, `"monthly";r=0;t=60, "rate";r=3;t=1`, "60"}},
		{"burst", "tok-burst", allowed("99", burstPolicy, `"rate";r=1;t=1, "monthly";r=99;t=60`)},
		{"burst, last", "tok-burst", allowed("98", burstPolicy, `"rate";r=0;t=1, "monthly";r=98;t=60`)},
		{"burst spent", "tok-burst", want{429, tooManyRequests, "98", burstPolicy, `"rate";r=0;t=1, "monthly";r=98;t=60`, "1"}},
		{"the default", "tok-default", allowed("99", defaultPolicy, `"rate";r=2;t=60, "monthly";r=99;t=60`)},
		{"the default, again", "tok-default", allowed("98", defaultPolicy, `"rate";r=1;t=60, "monthly";r=98;t=60`)},
		{"the default, last", "tok-default", allowed("97", defaultPolicy, `"rate";r=0;t=60, "monthly";r=97;t=60`)},
		{"the default, over", "tok-default", want{429, tooManyRequests, "97", defaultPolicy, `"rate";r=0;t=60, "monthly";r=97;t=60`, "60"}},
		{"off", "tok-off", allowed("99", `"monthly";q=100;w=2592000`, `"monthly";r=99;t=60`)},
		{"off, again", "tok-off", allowed("98", `"monthly";q=100;w=2592000`, `"monthly";r=98;t=60`)},
		{"off, and again", "tok-off", allowed("97", `"monthly";q=100;w=2592000`, `"monthly";r=97;t=60`)},
		{"off, a fourth time", "tok-off", allowed("96", `"monthly";q=100;w=2592000`, `"monthly";r=96;t=60`)},
		{"limit 0: no window read", "tok-zero", want{429, `{"message":"Monthly limit exceeded"}`, "0", `"monthly";q=0;w=2592000`, `"monthly";r=0;t=60`, "60"}},
		{"both limits", "tok-both", allowed("0", `"monthly";q=1;w=2592000, "rate";q=1;w=60`, `"monthly";r=0;t=60, "rate";r=0;t=60`)},
		{"over both: the month's 429", "tok-both", want{429, `{"message":"Monthly limit exceeded"}`, "0", `"monthly";q=1;w=2592000, "rate";q=1;w=60`, `"monthly";r=0;t=60, "rate";r=0;t=60`, "60"}},
		{"a Rate that is not a rate", "tok-bad-rate", want{500, `{"message":"Internal server error"}`, "", "", "", ""}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := testCall(t, app, "GET", tokenHeader(c.token))
			h := got.Header
			if got.Status != c.want.status || got.Body != c.want.body {
				t.Fatalf("got %d %q, want %d %q", got.Status, got.Body, c.want.status, c.want.body)
			}
			gotWant := want{got.Status, got.Body, h.Get("RateLimit-Remaining"), h.Get("RateLimit-Policy"), h.Get("RateLimit"), h.Get("Retry-After")}
			if gotWant != c.want {
				t.Errorf("got  %+v\nwant %+v", gotWant, c.want)
			}
			if c.want.status != 200 {
				if xe := h.Get("X-Pesto-Error"); !strings.Contains(c.want.body, `"`+xe+`"`) {
					t.Errorf("X-Pesto-Error = %q", xe)
				}
			}
		})
	}
	for email, want := range map[string]string{"own@example.com": "2", "month@example.com": "2", "burst@example.com": "2",
		"default@example.com": "3", "off@example.com": "4"} {
		if got := rs.Do("GET", counterNov+email); got != want {
			t.Errorf("counter of %s = %q, want %s: the calls answered 200", email, got, want)
		}
	}
	for _, email := range []string{"off@example.com", "zero@example.com"} {
		if hasWindow(rs, counterNov+email) {
			t.Errorf("a window for %s, whose key has no rate or had no call let through", email)
		}
	}
}

// Retry-After is right: a call made once it has passed is let through, for
// the window and for the burst alike; none is let in before the window has
// room again.
func TestRateRetryAfterLetsTheNextCallIn(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok-window", `{"UserEmail":"window@example.com","MonthlyLimit":100,"Revoked":false,"Rate":"3/s"}`)
	rs.Do("SET", "tok-burst", `{"UserEmail":"burst@example.com","MonthlyLimit":100,"Revoked":false,"Rate":"120/m;burst=1"}`)
	a := startAuth(t, map[string]string{"REDIS_URL": rs.URL})
	for token, allowedAtOnce := range map[string]int{"tok-window": 3, "tok-burst": 1} {
		t.Run(token, func(t *testing.T) {
			var firstSent time.Time
			for i := range allowedAtOnce {
				got := callAt(t, a.URL, token)
				if got.Status != 200 {
					t.Fatalf("call %d: %+v", i+1, got)
				}
				if i == 0 {
					firstSent = got.sent
				}
			}
			refused := callAt(t, a.URL, token)
			checkRateRefusal(t, refused.answer)
			retry := refused.got.Add(time.Second) // Retry-After: 1
			var allowedAt time.Time
			servicetest.Poll(t, 3*time.Second, "a call let through again", func() bool {
				got := callAt(t, a.URL, token)
				if got.Status != 200 {
					checkRateRefusal(t, got.answer)
					return false
				}
				allowedAt = got.got
				return true
			})
			if allowedAt.After(retry.Add(200 * time.Millisecond)) {
				t.Errorf("let through %v after Retry-After said", allowedAt.Sub(retry))
			}
			// Never within the second of the window's first call, and at most
			// a twentieth of it (and the polls' own time) later than that.
			if since := allowedAt.Sub(firstSent); token == "tok-window" && (since < time.Second || since > time.Second+50*time.Millisecond+200*time.Millisecond) {
				t.Errorf("let through %v after the first of the window's calls, want from 1 s to 1.05 s (and the polls' time)", since)
			}
		})
	}
}

// Calls refused by the rate write nothing to Redis (the AOF does not grow),
// and spend no monthly quota.
func TestRateRefusalWritesNothing(t *testing.T) {
	rs := redistest.StartStandalone(t, "--appendonly", "yes", "--appendfsync", "always")
	rs.Do("SET", "tok", `{"UserEmail":"flood@example.com","MonthlyLimit":100,"Revoked":false,"Rate":"2/m"}`)
	a := startAuth(t, map[string]string{"REDIS_URL": rs.URL, "LOG_LEVEL": "warn", "QUOTA_WARNINGS": ""})
	for range 2 {
		if got := call(t, "GET", a.URL, "tok"); got.Status != 200 {
			t.Fatal(got)
		}
	}
	refusedFloodWritesNothing(t, rs, a.URL, "tok", tooManyRequests)
	if got := rs.Do("GET", wire.CounterKey(time.Now(), "flood@example.com")); got != "2" {
		t.Errorf("counter = %q, want 2", got)
	}
}

// The windows of a counter's calls are in a hash of its Redis Cluster slot,
// whatever the email (one with braces too), so that one script holds both;
// and such a key is counted and limited on a Cluster.
func TestRateWindowSharesTheCounterSlot(t *testing.T) {
	rs := redistest.StartCluster(t)
	for _, email := range []string{"jane@example.com", "a{b}@example.com", "a}b@example.com", "a{}b@example.com",
		"{x}@example.com", "a{b@example.com", "}{@example.com"} {
		counter := counterNov + email
		want := rs.Do("CLUSTER", "KEYSLOT", counter)
		slot, _ := strconv.Atoi(want)
		if got := rs.Do("CLUSTER", "KEYSLOT", rateWindowsKey(uint16(slot))); got != want || hashSlot(counter) != uint16(slot) {
			t.Errorf("%s: windows %q in slot %s, counter in %s", email, rateWindowsKey(uint16(slot)), got, want)
		}
	}
	rs.Do("SET", "tok-braces", `{"UserEmail":"a}b@example.com","MonthlyLimit":100,"Revoked":false,"Rate":"1/m"}`)
	app, _ := newTestApp(t, rs, nil, endOfMonth)
	if got := testCall(t, app, "GET", tokenHeader("tok-braces")); got.Status != 200 {
		t.Fatalf("first call: %d %q", got.Status, got.Body)
	}
	if got := testCall(t, app, "GET", tokenHeader("tok-braces")); got.Status != 429 || got.Body != tooManyRequests {
		t.Fatalf("second call: %d %q, want the rate's 429", got.Status, got.Body)
	}
	if !hasWindow(rs, counterNov+"a}b@example.com") {
		t.Error("no window in the counter's slot's hash")
	}
}

// A window whose calls have all left it is deleted by a later script that
// writes its hash and draws it; the hash expires a minute after its last
// write.
func TestStaleWindowsAreDeleted(t *testing.T) {
	rs := redistest.StartStandalone(t)
	windows := rateWindowsKey(0)
	rs.Do("HSET", windows, "counter/2026-11/gone@example.com", "short", "counter/2026-11/old@example.com",
		string([]byte{0x42, 0, 0, 0, 0, 0, 0, 0})+strings.Repeat("\x00", 24)) // written at the epoch: stale
	rs.Do("SET", "tok", `{"UserEmail":"live@example.com","MonthlyLimit":100,"Revoked":false,"Rate":"1000/s"}`)
	app, _ := newTestApp(t, rs, nil, endOfMonth)
	servicetest.Poll(t, 5*time.Second, "the stale windows deleted", func() bool {
		if got := testCall(t, app, "GET", tokenHeader("tok")); got.Status != 200 {
			t.Fatalf("call: %d %q", got.Status, got.Body)
		}
		return rs.Do("HLEN", windows) == "1"
	})
	if !hasWindow(rs, counterNov+"live@example.com") {
		t.Error("the live window was deleted")
	}
	if ttl, _ := strconv.Atoi(rs.Do("PTTL", windows)); ttl < 59000 || ttl > 61000 {
		t.Errorf("PTTL = %d, want about a minute", ttl)
	}
}

// rateRoom is how many calls rate lets through now on the window of the
// counter counterKey.
func rateRoom(t *testing.T, rs *redistest.Server, counterKey string, rate wire.Rate) int64 {
	t.Helper()
	v, err := rateInfoScript.Exec(context.Background(), rs.Client(), []string{rateWindowsKey(testGroupOf(rs, counterKey))},
		[]string{counterKey, rateArg(rate)}).AsIntSlice()
	if err != nil {
		t.Fatal(err)
	}
	return v[0]
}

// hasWindow reports whether the counter counterKey has a window.
func hasWindow(rs *redistest.Server, counterKey string) bool {
	return rs.Do("HEXISTS", rateWindowsKey(testGroupOf(rs, counterKey)), counterKey) == "1"
}

// testGroupOf is the group commit's group of a counter on rs.
func testGroupOf(rs *redistest.Server, counterKey string) uint16 {
	if rs.Client().Mode() == rueidis.ClientModeCluster {
		return hashSlot(counterKey)
	}
	return 0
}

// The keys of one email share its window, as they share its month; a new
// month's window starts afresh.
func TestRateWindowPerEmailAndMonth(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok-a", `{"UserEmail":"shared@example.com","MonthlyLimit":100,"Revoked":false,"Rate":"2/m"}`)
	rs.Do("SET", "tok-b", `{"UserEmail":"shared@example.com","MonthlyLimit":100,"Revoked":false,"Rate":"2/m"}`)
	nov, _ := newTestApp(t, rs, nil, endOfMonth)
	dec, _ := newTestApp(t, rs, nil, endOfMonth.Add(2*time.Minute))
	for i, c := range []struct {
		app    *fiber.App
		token  string
		status int
	}{
		{nov, "tok-a", 200}, {nov, "tok-b", 200}, {nov, "tok-a", 429}, {nov, "tok-b", 429},
		{dec, "tok-a", 200}, {dec, "tok-b", 200}, {dec, "tok-b", 429},
	} {
		if got := testCall(t, c.app, "GET", tokenHeader(c.token)); got.Status != c.status {
			t.Fatalf("call %d (%s): %d %q, want %d", i+1, c.token, got.Status, got.Body, c.status)
		}
	}
}

// Unmetered keys are not held to a rate either: nothing is counted for them.
func TestRateSparesUnmeteredKeys(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "TRIAL-tok", `{"UserEmail":"trial-abc@pesto.teknologiumum.com","MonthlyLimit":10,"Revoked":false,"Rate":"1/m"}`)
	app, _ := newTestApp(t, rs, map[string]string{"KEY_RATE": "1/m"}, endOfMonth)
	for i := range 3 {
		if got := testCall(t, app, "GET", tokenHeader("TRIAL-tok")); got.Status != 200 || got.Header.Get("RateLimit") != "" {
			t.Fatalf("call %d: %d %v", i+1, got.Status, got.Header)
		}
	}
}

// What a refused or allowed call of a batch entry is told.
func TestVerdictOf(t *testing.T) {
	rated := policy{limit: 10, rate: wire.Rate{Count: 5, Per: time.Second}}
	for _, c := range []struct {
		name string
		e    entry
		i    int64
		want verdict
	}{
		{"no rate, allowed", entry{pol: policy{limit: 10}, n: 3, before: 4, granted: 3}, 2,
			verdict{used: 7, allowed: true}},
		{"no rate, over the month", entry{pol: policy{limit: 10}, n: 3, before: 9, granted: 1}, 1,
			verdict{used: 10}},
		{"rate, allowed", entry{pol: rated, n: 3, before: 4, granted: 3, room: 5, wait: time.Second}, 1,
			verdict{used: 6, allowed: true, rated: true, rateLeft: 3, rateWait: time.Second}},
		{"refused by the rate", entry{pol: rated, n: 3, before: 4, granted: 2, room: 2, wait: 300 * time.Millisecond}, 2,
			verdict{used: 6, limited: true, rated: true, rateWait: 300 * time.Millisecond}},
		{"refused by the month first", entry{pol: rated, n: 3, before: 9, granted: 1, room: 1, wait: time.Second}, 1,
			verdict{used: 10, rated: true, rateWait: time.Second}},
	} {
		if got := c.e.verdictOf(c.i); got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}
