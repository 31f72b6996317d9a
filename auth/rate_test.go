package main

import (
	"context"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v3"
	"github.com/redis/rueidis"

	"pesto/shared/redisconn"
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
// A rate of 5 is counted by the script from the second call on; one of 200
// with plain commands until its window holds 175, across the replicas.
func TestRateExactAcrossReplicas(t *testing.T) {
	for _, n := range []int{5, 200} {
		t.Run(strconv.Itoa(n)+"/s", func(t *testing.T) { rateExactAcrossReplicas(t, n) })
	}
}

func rateExactAcrossReplicas(t *testing.T, n int) {
	rs := redistest.Start(t)
	const token, email = "tok-rate", "rate@example.com"
	rs.Do("SET", token, `{"UserEmail":"`+email+`","MonthlyLimit":1000000,"Revoked":false,"Rate":"`+strconv.Itoa(n)+`/s"}`)
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
		return rateRoom(t, rs, wire.CounterKey(time.Now(), email), wire.Rate{Count: int64(n), Per: time.Second}) == int64(n)
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
	if last.Sub(first) < 900*time.Millisecond && burstAllowed != min(n, 40) {
		t.Errorf("%d of 40 calls at once let through, want %d", burstAllowed, min(n, 40))
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

// A counter's window is a hash in the counter's Redis Cluster slot,
// whatever the email (one with braces too), so that one script holds both;
// and such a key is counted and limited on a Cluster.
func TestRateWindowSharesTheCounterSlot(t *testing.T) {
	rs := redistest.StartCluster(t)
	for _, email := range []string{"jane@example.com", "a{b}@example.com", "a}b@example.com", "a{}b@example.com",
		"{x}@example.com", "a{b@example.com", "}{@example.com"} {
		counter := counterNov + email
		want := rs.Do("CLUSTER", "KEYSLOT", counter)
		slot, _ := strconv.Atoi(want)
		if got := rs.Do("CLUSTER", "KEYSLOT", rateWindowKey(counter, true)); got != want || hashSlot(counter) != uint16(slot) {
			t.Errorf("%s: window %q in slot %s, counter in %s", email, rateWindowKey(counter, true), got, want)
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
		t.Error("no window in the counter's slot")
	}
}

// A window holds the script's fields per slot with calls, named by the
// slot's number, and a field per replica; once it holds more than
// rateMaxFields, the script's fields out of the slots a call may count are
// deleted, and a replica's field as soon as all its slots are; it expires
// three windows and a slot after its expiry's last push.
func TestStaleWindowFieldsAreDeleted(t *testing.T) {
	for _, path := range []string{"script", "plain"} {
		t.Run(path, func(t *testing.T) {
			rs := redistest.StartStandalone(t)
			rs.Do("SET", "tok", `{"UserEmail":"live@example.com","MonthlyLimit":1000000,"Revoked":false,"Rate":"1000/s"}`)
			app, _ := newTestApp(t, rs, nil, endOfMonth)
			window := rateWindowKey(counterNov+"live@example.com", false)
			if path == "plain" { // the replica has seen the window far below its rate
				if got := testCall(t, app, "GET", tokenHeader("tok")); got.Status != 200 {
					t.Fatalf("call: %d %q", got.Status, got.Body)
				}
			}
			now := rateSlotOf(wire.Rate{Count: 1000, Per: time.Second}, time.Now().UnixMicro())
			old := []string{"HSET", window}
			for i := range rateMaxFields / 2 {
				slot := strconv.FormatInt(now-1000-int64(i), 10)
				old = append(old, slot, "1", slot+"t", "1")
			}
			rs.Do(old...)
			// A replica's field whose slots have all left the window (a
			// replica gone), and one of a replica still counting.
			gone := strconv.FormatInt(now-1000, 10)
			rs.Do("HSET", window, "junk", "7", "pgone", gone+":3:1,5:2:1", "plive", gone+":3:1,1000:1:1")
			if got := testCall(t, app, "GET", tokenHeader("tok")); got.Status != 200 {
				t.Fatalf("call: %d %q", got.Status, got.Body)
			}
			fields := strings.Fields(rs.Do("HKEYS", window))
			live := 0
			for _, f := range fields {
				if f == "junk" || strings.HasPrefix(f, "p") {
					continue
				}
				digits := strings.IndexFunc(f, func(r rune) bool { return r < '0' || r > '9' })
				if digits < 0 {
					digits = len(f)
				}
				if u, _ := strconv.ParseInt(f[:digits], 10, 64); u < now-rateKeep {
					t.Errorf("field %s left, of a slot out of the window", f)
				}
				live++
			}
			if !slices.Contains(fields, "junk") || !slices.Contains(fields, "plive") || slices.Contains(fields, "pgone") || live != 2 {
				t.Errorf("fields %v: want the live slot's two, the live replicas' and junk", fields)
			}
			if ttl, _ := strconv.Atoi(rs.Do("PTTL", window)); ttl < 2900 || ttl > 3050 {
				t.Errorf("PTTL = %d, want about 3050 ms (rateWindowMillis)", ttl)
			}
		})
	}
}

// rateRoom is how many calls rate lets through now on the window of the
// counter counterKey.
func rateRoom(t *testing.T, rs *redistest.Server, counterKey string, rate wire.Rate) int64 {
	t.Helper()
	c := rs.Client()
	window := rateWindowKey(counterKey, c.Mode() == rueidis.ClientModeCluster)
	fields, err := c.Do(context.Background(), c.B().Hgetall().Key(window).Build()).AsStrMap()
	if err != nil {
		t.Fatal(err)
	}
	w := readWindow(fields, rate, time.Now().UnixMicro())
	return w.room(rate)
}

// hasWindow reports whether the counter counterKey has a window.
func hasWindow(rs *redistest.Server, counterKey string) bool {
	return rs.Do("EXISTS", rateWindowKey(counterKey, rs.Client().Mode() == rueidis.ClientModeCluster)) == "1"
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

// A key this replica saw far below its rate is counted with plain commands,
// not the script: the first call reads its window through the script, the
// next ones write this replica's field of it and read it back, and the
// answers stay exact.
func TestRateFarBelowSkipsTheScript(t *testing.T) {
	rs := redistest.StartStandalone(t)
	rs.Do("SET", "tok", `{"UserEmail":"far@example.com","MonthlyLimit":100,"Revoked":false,"Rate":"1000/s"}`)
	app, _ := newTestApp(t, rs, nil, endOfMonth)
	for i := 1; i <= 10; i++ {
		got := testCall(t, app, "GET", tokenHeader("tok"))
		if want := `"rate";r=` + strconv.Itoa(1000-i) + ";t=1"; got.Status != 200 || !strings.Contains(got.Header.Get("RateLimit"), want) {
			t.Fatalf("call %d: %d, RateLimit %q, want %q in it", i, got.Status, got.Header.Get("RateLimit"), want)
		}
	}
	if n := commandCalls(t, rs, "evalsha"); n != 1 {
		t.Errorf("the counter script ran %d times for 10 calls far below the rate, want 1 (the first)", n)
	}
	if n := commandCalls(t, rs, "hset"); n != 10 {
		t.Errorf("HSET ran %d times, want 10: one a plain call, and the script's of its slot's time", n)
	}
	key := rateWindowKey(counterNov+"far@example.com", false)
	var own []string
	for f, v := range hgetall(t, rs, key) {
		if strings.HasPrefix(f, "p") {
			own = append(own, v)
		}
	}
	total := int64(0)
	for _, v := range own {
		w := window{t: rateSlotOf(wire.Rate{Count: 1000, Per: time.Second}, time.Now().UnixMicro()), per: time.Second.Microseconds()}
		w.addOwnField(v)
		for _, c := range w.calls {
			total += c
		}
	}
	if len(own) != 1 || total != 9 {
		t.Errorf("this replica's fields %q hold %d calls, want one field with 9", own, total)
	}
	if got := rs.Do("GET", counterNov+"far@example.com"); got != "10" {
		t.Errorf("counter = %q, want 10", got)
	}
}

// Other replicas fill a window behind this one's back: the plain call that
// passes the rate is refused, the month's counter and this replica's field
// given back at once, and from then on the window is checked by the
// script, which writes nothing for a refused call.
func TestPlainRatePassingGivesTheExcessBack(t *testing.T) {
	rs := redistest.StartStandalone(t, "--appendonly", "yes", "--appendfsync", "always")
	rs.Do("SET", "tok", `{"UserEmail":"full@example.com","MonthlyLimit":100,"Revoked":false,"Rate":"8/m"}`)
	app, _ := newTestApp(t, rs, nil, endOfMonth)
	counter, window := counterNov+"full@example.com", rateWindowKey(counterNov+"full@example.com", false)
	if got := testCall(t, app, "GET", tokenHeader("tok")); got.Status != 200 {
		t.Fatalf("first call: %d", got.Status)
	}
	now := time.Now().UnixMicro()
	slot := rateSlotOf(wire.Rate{Count: 8, Per: time.Minute}, now)
	rs.Do("HSET", window, "pother", ownCalls{}.add(slot, 7, now).field(rateSlotMicros(wire.Rate{Count: 8, Per: time.Minute}))) // the window full
	got := testCall(t, app, "GET", tokenHeader("tok"))
	if got.Status != 429 || got.Body != tooManyRequests || got.Header.Get("Retry-After") != "60" {
		t.Fatalf("past the rate: %d %q Retry-After %q, want 429 Too many requests, 60", got.Status, got.Body, got.Header.Get("Retry-After"))
	}
	if n := commandCalls(t, rs, "evalsha"); n != 2 {
		t.Fatalf("scripts ran %d times, want 2 (the first call's count, the month's refund): the refused call was counted with plain commands", n)
	}
	if got := rs.Do("GET", counter); got != "1" {
		t.Fatalf("counter = %q after the refused call, want 1", got)
	}
	w := readWindow(hgetall(t, rs, window), wire.Rate{Count: 8, Per: time.Minute}, time.Now().UnixMicro())
	if w.total != 8 {
		t.Fatalf("the window holds %d calls after the refused call, want 8", w.total)
	}
	aof := rs.Do("INFO", "persistence")
	for range 5 {
		if got := testCall(t, app, "GET", tokenHeader("tok")); got.Status != 429 || got.Body != tooManyRequests {
			t.Fatalf("over the rate: %d %q", got.Status, got.Body)
		}
	}
	if after := rs.Do("INFO", "persistence"); aofLine(after) != aofLine(aof) {
		t.Fatalf("refused calls wrote to Redis: %s → %s", aofLine(aof), aofLine(after))
	}
}

// hgetall is a hash's fields and values.
func hgetall(t *testing.T, rs *redistest.Server, key string) map[string]string {
	t.Helper()
	c := rs.Client()
	m, err := c.Do(context.Background(), c.B().Hgetall().Key(key).Build()).AsStrMap()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// The script's window arithmetic (rateLua) is window's: on windows of every
// shape (the script's slots, replicas' fields, slots without a time, a
// burst's arrival time), the room before a call and the wait after it are
// the same, to the microsecond.
func TestRateLuaMatchesGo(t *testing.T) {
	rs := redistest.StartStandalone(t)
	c := rs.Client()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		r := wire.Rate{Count: 1 + rng.Int64N(12), Per: []time.Duration{time.Second, time.Minute}[rng.IntN(2)]}
		if rng.IntN(3) == 0 && r.Count > 1 {
			r.Burst = 1 + rng.Int64N(r.Count-1)
		}
		now := time.Now().UnixMicro() + rng.Int64N(1_000_000)
		slotLen := rateSlotMicros(r)
		t0 := now / slotLen
		counter := "counter/2026-11/lua" + strconv.Itoa(i) + "@example.com"
		window := rateWindowKey(counter, false)
		own := map[string]ownCalls{}
		for range rng.IntN(6) {
			u := t0 - int64(rng.IntN(rateSlots+3)) + int64(rng.IntN(2))
			calls := 1 + rng.Int64N(3)
			switch rng.IntN(3) {
			case 0: // the script's, with a time
				rs.Do("HINCRBY", window, strconv.FormatInt(u, 10), strconv.FormatInt(calls, 10))
				rs.Do("HSET", window, strconv.FormatInt(u, 10)+"t", strconv.FormatInt(u*slotLen+rng.Int64N(slotLen), 10))
			case 1: // the script's, without
				rs.Do("HINCRBY", window, strconv.FormatInt(u, 10), strconv.FormatInt(calls, 10))
			default: // a replica's: its field holds all its slots
				id := "p" + strconv.Itoa(rng.IntN(3))
				own[id] = own[id].add(u, calls, u*slotLen+rng.Int64N(slotLen))
				rs.Do("HSET", window, id, own[id].field(slotLen))
			}
		}
		if r.Burst > 0 && rng.IntN(2) == 0 {
			rs.Do("HSET", window, "b", strconv.FormatInt(now+rng.Int64N(int64(r.Per/time.Microsecond)), 10))
		}
		w := readWindow(hgetall(t, rs, window), r, now)
		n := 1 + rng.Int64N(4)
		reply, err := counterScript.Exec(ctx, c, []string{counter, window},
			[]string{"0", counterTTL, strconv.FormatInt(now, 10), "1000000", strconv.FormatInt(n, 10), rateArg(r)}).AsIntSlice()
		if err != nil {
			t.Fatal(err)
		}
		room := w.room(r)
		granted := min(n, room)
		if granted > 0 {
			w.calls[rateSlots] += granted
			w.total += granted
			w.latest[rateSlots] = max(w.latest[rateSlots], now)
			if r.Burst > 0 {
				w.tat = int64(math.Ceil(float64(max(w.tat, now)) + float64(granted)*float64(r.Per.Microseconds())/float64(r.Count)))
			}
		}
		wait := w.wait(r).Microseconds()
		if reply[1] != granted || reply[2] != room || reply[3] < wait-1 || reply[3] > wait+1 {
			t.Fatalf("case %d, rate %v, %d calls, window %v: script granted %d, room %d, wait %d µs; Go %d, %d, %d µs",
				i, r, n, hgetall(t, rs, window), reply[1], reply[2], reply[3], granted, room, wait)
		}
	}
}

// A window whose calls another replica counted at a time after this one's
// (its batch reached Redis first) tells a refused call to wait a window from
// the latest time known, not from its own older one: Retry-After 1 for a
// rate per second, never 2.
func TestRateWaitFromTheLatestTimeKnown(t *testing.T) {
	r := wire.Rate{Count: 5, Per: time.Second}
	now := time.Now().UnixMicro()
	field := ownCalls{}.add(rateSlotOf(r, now+3000), 5, now+3000).field(rateSlotMicros(r))
	w := readWindow(map[string]string{"pother": field}, r, now)
	if room, wait := w.room(r), w.wait(r); room != 0 || wait != time.Second {
		t.Errorf("room %d, wait %v; want 0 and 1s", room, wait)
	}
	if got := rateStateOf(r, 0, w.wait(r)).reset; got != 1 {
		t.Errorf("Retry-After %d, want 1", got)
	}
}

// A replica counting a key far below its rate with plain commands pushes
// its window's expiry only once a window and a quarter (ratePushDue), not
// on every call (and with the write that makes its field of the window);
// a window deleted meanwhile (by an operator), which HSET makes anew
// without an expiry, gets its expiry at once.
func TestPlainWritesPushTheExpiryWhenDue(t *testing.T) {
	rs := redistest.StartStandalone(t)
	cfg, err := loadConfig(servicetest.Env(withDefaults(map[string]string{"REDIS_URL": rs.URL})))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	conn := redisconn.Dial(cfg.counterOptions(), log)
	t.Cleanup(conn.Close)
	k := newRedisCounter(conn, log)
	rate := wire.Rate{Count: 1000, Per: time.Second}
	counter := counterNov + "push@example.com"
	window := rateWindowKey(counter, false)
	count := func(what string) {
		t.Helper()
		e := []entry{{key: counter, n: 1, pol: policy{limit: 1 << 40, rate: rate}}}
		if err := k.countBatch(context.Background(), time.Time{}, e); err != nil || e[0].err != nil || e[0].granted != 1 {
			t.Fatalf("%s: granted %d, err %v %v", what, e[0].granted, err, e[0].err)
		}
	}
	pttl := func() int {
		n, _ := strconv.Atoi(rs.Do("PTTL", window))
		return n
	}
	count("first call (the script)")
	for i := range 5 {
		count("plain call " + strconv.Itoa(i))
	}
	if n := commandCalls(t, rs, "hgetall"); n != 6 {
		t.Fatalf("HGETALL ran %d times, want 6 (the script's and five plain calls')", n)
	}
	if n := commandCalls(t, rs, "pexpire"); n != 2 {
		t.Errorf("PEXPIRE ran %d times for one script call and five plain calls within a window, want 2 (the script's, and the plain write that made this replica's field)", n)
	}
	if ms := pttl(); ms < 2500 || ms > 3050 {
		t.Errorf("PTTL = %d ms, want at most rateWindowMillis (3050) and no less than its push left", ms)
	}

	rs.Do("DEL", window)
	count("after the window was deleted")
	if n := commandCalls(t, rs, "pexpire"); n != 3 {
		t.Errorf("PEXPIRE ran %d times, want 3: the window made anew gets its expiry", n)
	}
	if ms := pttl(); ms < 2900 || ms > 3050 {
		t.Errorf("PTTL = %d ms of the window made anew, want about 3050", ms)
	}

	// A window and a quarter after the last push, as far as this replica knows.
	k.seenMu.Lock()
	for name, s := range k.seen {
		s.pushed -= ratePushEvery(rate)
		k.seen[name] = s
	}
	k.seenMu.Unlock()
	count("a window and a quarter later")
	if n := commandCalls(t, rs, "pexpire"); n != 4 {
		t.Errorf("PEXPIRE ran %d times, want 4: a push is due", n)
	}
	count("right after that")
	if n := commandCalls(t, rs, "pexpire"); n != 4 {
		t.Errorf("PEXPIRE ran %d times, want still 4", n)
	}
	if got := rs.Do("GET", counter); got != "9" {
		t.Errorf("counter = %q, want 9", got)
	}
}

func TestRatePushDue(t *testing.T) {
	r := wire.Rate{Count: 10, Per: time.Minute}
	every := ratePushEvery(r)
	if every != 75_000_000 {
		t.Fatalf("ratePushEvery = %d µs, want 75 s", every)
	}
	for _, tc := range []struct {
		pushed, now int64
		want        bool
	}{
		{0, 1_000_000_000, true},              // never pushed (or seen cleared)
		{1_000_000_000, 1_000_000_000, false}, // just pushed
		{1_000_000_000, 1_000_000_000 + every - 1, false},
		{1_000_000_000, 1_000_000_000 + every, true},
		{1_000_000_000, 999_999_999, true}, // the clock went back
	} {
		own := ownCalls{{slot: rateSlotOf(r, tc.now), calls: 1, latest: tc.now}} // its field holds a call of now's slot
		if got := ratePushDue(r, tc.pushed, own, tc.now); got != tc.want {
			t.Errorf("ratePushDue(pushed %d, now %d) = %v, want %v", tc.pushed, tc.now, got, tc.want)
		}
	}
	// A write that makes this replica's field may make the window.
	if !ratePushDue(r, 1_000_000_000, nil, 1_000_000_000) {
		t.Error("a field written anew: no push due, want one")
	}
	if old := (ownCalls{{slot: rateSlotOf(r, 1_000_000_000) - rateKeep - 1, calls: 1}}); !ratePushDue(r, 1_000_000_000, old, 1_000_000_000) {
		t.Error("a field whose slots all left rateKeep (another replica may have deleted it): no push due, want one")
	}
	// Calls written up to a push interval after the last push outlive every
	// window that counts them (a window and a slot after their time).
	if left := rateWindowMillis(r)*1000 - every; left < (r.Per + r.Per/rateSlots).Microseconds() {
		t.Errorf("a window outlives a call written %d µs after its push by %d µs, less than a window and a slot", every, left)
	}
}

// A replica's field holds its slots in order, each call's latest time to
// the microsecond, and reads back as written; slots older than rateKeep
// before a call's are dropped, newer ones kept; a key called a few times a
// second keeps a field short enough for Redis's compact listpack (64
// bytes).
func TestOwnFieldRoundTrip(t *testing.T) {
	r := wire.Rate{Count: 10, Per: time.Second}
	slotLen := rateSlotMicros(r)
	now := time.Now().UnixMicro()
	t0 := rateSlotOf(r, now)
	at := func(slot, into int64) int64 { return slot*slotLen + into }
	var o ownCalls
	o = o.add(t0-7, 2, at(t0-7, 49_999))
	o = o.add(t0, 1, at(t0, 10))
	o = o.add(t0-3, 4, at(t0-3, 0))   // a batch whose clock was behind
	o = o.add(t0, 2, at(t0, 5))       // an earlier time in the same slot
	o = o.add(t0-40, 1, at(t0-40, 1)) // out of rateKeep at the next call's
	o = o.add(t0, 0, at(t0, 20))
	want := ownCalls{{t0 - 7, 2, at(t0-7, 49_999)}, {t0 - 3, 4, at(t0-3, 0)}, {t0, 3, at(t0, 20)}}
	if !slices.Equal(o, want) {
		t.Fatalf("ownCalls %v, want %v", o, want)
	}
	field := o.field(slotLen)
	if wantField := strconv.FormatInt(t0-7, 10) + ":2:49999,4:4:0,3:3:20"; field != wantField {
		t.Errorf("field %q, want %q", field, wantField)
	}
	if len(field) > 64 {
		t.Errorf("field of three slots is %d bytes, more than a listpack value's 64", len(field))
	}
	w := readWindow(map[string]string{"pother": field}, r, at(t0, 30))
	for d, c := range w.calls {
		slot := t0 - rateSlots + int64(d)
		var wc, wl int64
		for _, s := range want {
			if s.slot == slot {
				wc, wl = s.calls, s.latest
			}
		}
		if c != wc || c > 0 && w.latest[d] != wl {
			t.Errorf("slot %d: %d calls, latest %d; want %d, %d", slot, c, w.latest[d], wc, wl)
		}
	}
	// A call whose time is well behind (a clock set back) keeps the newer
	// slots, which other replicas' calls still count.
	if o = o.add(t0-2*rateKeep, 1, at(t0-2*rateKeep, 0)); len(o) != 4 || o[0].slot != t0-2*rateKeep {
		t.Errorf("after a call %d slots back: %v, want it first and the three newer slots kept", 2*rateKeep, o)
	}
}
