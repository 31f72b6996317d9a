package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"pesto/shared/redistest"
	"pesto/shared/servicetest"
	"pesto/shared/wire"
)

// One minute before the month ends: RateLimit-Reset and Retry-After are 60.
var endOfMonth = time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC)

const counterNov = "counter/2026-11/"

// Every row of the decision table of SPEC §2, status and body byte for byte.
func TestDecisionTable(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok-ok", `{"UserEmail":"ok@example.com","MonthlyLimit":3,"Revoked":false}`)
	rs.Do("SET", "tok-revoked", `{"UserEmail":"rev@example.com","MonthlyLimit":3,"Revoked":true}`)
	rs.Do("SET", "tok-used", `{"UserEmail":"used@example.com","MonthlyLimit":2,"Revoked":false}`)
	rs.Do("SET", counterNov+"used@example.com", "2")
	rs.Do("SET", "tok-corrupt", `{"UserEmail":"c@example.com","MonthlyLimit":"lots"}`)
	rs.Do("SET", "tok-bad-counter", `{"UserEmail":"bc@example.com","MonthlyLimit":3,"Revoked":false}`)
	rs.Do("SET", counterNov+"bc@example.com", "many")
	rs.Do("RPUSH", "tok-list", "x")
	app, _ := newTestApp(t, rs, nil, endOfMonth)

	const (
		noToken    = `{"message":"Token must be supplied"}`
		notReg     = `{"message":"Token not registered"}`
		revoked    = `{"message":"Token has been revoked"}`
		overQuota  = `{"message":"Monthly limit exceeded"}`
		internal   = `{"message":"Internal server error"}`
		noHeader   = "-"
		retryMonth = "60"
	)
	for _, c := range []struct {
		name, token string
		status      int
		body        string
		retryAfter  string
		rate        [3]string // RateLimit-Limit, -Remaining, -Reset; empty: none
	}{
		{"no header", noHeader, 401, noToken, "", [3]string{}},
		{"empty header", "", 401, noToken, "", [3]string{}},
		{"no such key", "tok-missing", 401, notReg, "", [3]string{}},
		{"revoked", "tok-revoked", 401, revoked, "", [3]string{}},
		{"allowed", "tok-ok", 200, "", "", [3]string{"3", "2", "60"}},
		{"allowed again", "tok-ok", 200, "", "", [3]string{"3", "1", "60"}},
		{"last allowed", "tok-ok", 200, "", "", [3]string{"3", "0", "60"}},
		{"quota used up", "tok-ok", 429, overQuota, retryMonth, [3]string{"3", "0", "60"}},
		{"quota used up by earlier calls", "tok-used", 429, overQuota, retryMonth, [3]string{"2", "0", "60"}},
		{"corrupt record", "tok-corrupt", 500, internal, "", [3]string{}},
		{"counter not a number", "tok-bad-counter", 500, internal, "", [3]string{}},
		{"key of another type", "tok-list", 500, internal, "", [3]string{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{}
			if c.token != noHeader {
				h[headerToken] = []string{c.token}
			}
			got := testCall(t, app, "GET", h)
			if got.Status != c.status || got.Body != c.body {
				t.Fatalf("got %d %q, want %d %q", got.Status, got.Body, c.status, c.body)
			}
			if c.body != "" {
				var msg struct{ Message string }
				_ = json.Unmarshal([]byte(c.body), &msg)
				if ct := got.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q", ct)
				}
				if xe := got.Header.Get("X-Pesto-Error"); xe != msg.Message {
					t.Errorf("X-Pesto-Error = %q, want %q", xe, msg.Message)
				}
			} else if got.Header.Get("X-Pesto-Error") != "" {
				t.Errorf("X-Pesto-Error on a 200")
			}
			if ra := got.Header.Get("Retry-After"); ra != c.retryAfter {
				t.Errorf("Retry-After = %q, want %q", ra, c.retryAfter)
			}
			rate := [3]string{got.Header.Get("RateLimit-Limit"), got.Header.Get("RateLimit-Remaining"), got.Header.Get("RateLimit-Reset")}
			if rate != c.rate {
				t.Errorf("RateLimit-* = %q, want %q", rate, c.rate)
			}
			for name, values := range got.Header {
				for _, v := range values {
					if strings.Contains(v, "@") || (len(c.token) > 3 && strings.Contains(v, c.token)) {
						t.Errorf("header %s: %q carries the email or token", name, v)
					}
				}
			}
		})
	}
	if got := rs.Do("GET", counterNov+"ok@example.com"); got != "3" {
		t.Errorf("counter = %q, want 3: denied calls are not counted", got)
	}
	if got := rs.Do("GET", counterNov+"used@example.com"); got != "2" {
		t.Errorf("counter = %q, want 2", got)
	}
}

// Malformed tokens, and tokens naming our own keys, are refused without a
// Redis lookup, even where the key holds something that looks like a record.
func TestMalformedTokensNeverReachRedis(t *testing.T) {
	rs := redistest.Start(t)
	for _, key := range []string{"waiting-list", "pesto:thing", counterNov + "x@example.com", strings.Repeat("a", 257)} {
		rs.Do("SET", key, validRecord)
	}
	rs.Do("SET", strings.Repeat("a", 256), validRecord)
	app, store := newTestApp(t, rs, nil, endOfMonth)
	for _, token := range []string{
		strings.Repeat("a", 257),
		"waiting-list", "pesto:thing", "pesto:", counterNov + "x@example.com", "counter/",
		"with space", "tab\there", "tök",
	} {
		got := testCall(t, app, "GET", tokenHeader(token))
		if got.Status != 401 || got.Body != `{"message":"Token not registered"}` {
			t.Errorf("%q: got %d %q", token, got.Status, got.Body)
		}
	}
	if n := store.lookups(); n != 0 {
		t.Fatalf("%d Redis lookups for malformed tokens, want 0", n)
	}
	// The longest well-formed token is looked up.
	if got := testCall(t, app, "GET", tokenHeader(strings.Repeat("a", 256))); got.Status != 200 || store.lookups() != 1 {
		t.Fatalf("256-byte token: %+v after %d lookups", got, store.lookups())
	}
}

// The hook answers every method: proxies, probes and preserveRequestMethod.
func TestEveryMethod(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok", validRecord)
	app, _ := newTestApp(t, rs, nil, endOfMonth)
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND", "FOO"} {
		if got := testCall(t, app, m, tokenHeader("tok")); got.Status != 200 || got.Body != "" {
			t.Errorf("%s: %d %q", m, got.Status, got.Body)
		}
		if got := testCall(t, app, m, http.Header{}); got.Status != 401 {
			t.Errorf("%s without token: %d", m, got.Status)
		}
	}
}

// Every record shape of the legacy services, through the handler.
func TestTokenRecordFixtures(t *testing.T) {
	var f struct {
		Cases []struct {
			Name string          `json:"name"`
			Raw  string          `json:"raw"`
			Want json.RawMessage `json:"want"`
		} `json:"cases"`
	}
	servicetest.Fixture(t, servicetest.LegacyFixtures+"token-records.json", &f)
	if len(f.Cases) == 0 {
		t.Fatal("fixture: no cases")
	}
	rs := redistest.Start(t)
	app, _ := newTestApp(t, rs, nil, endOfMonth)
	for i, c := range f.Cases {
		t.Run(c.Name, func(t *testing.T) {
			token := "fixture-" + strconv.Itoa(i)
			rs.Do("SET", token, c.Raw)
			got := testCall(t, app, "GET", tokenHeader(token))
			var want struct {
				UserEmail    string
				MonthlyLimit int64
				Revoked      bool
			}
			switch {
			case string(c.Want) == `"corrupt"`:
				if got.Status != 500 || got.Body != `{"message":"Internal server error"}` {
					t.Fatalf("got %d %q, want 500", got.Status, got.Body)
				}
				return
			case json.Unmarshal(c.Want, &want) != nil:
				t.Fatalf("bad fixture %s", c.Want)
			case want.Revoked:
				if got.Status != 401 || got.Body != `{"message":"Token has been revoked"}` {
					t.Fatalf("got %d %q, want revoked", got.Status, got.Body)
				}
			case strings.HasPrefix(want.UserEmail, "trial"): // unmetered by default
				if got.Status != 200 || got.Header.Get("RateLimit-Limit") != "" {
					t.Fatalf("got %d %v, want unmetered 200", got.Status, got.Header)
				}
			case want.MonthlyLimit == 0:
				if got.Status != 429 {
					t.Fatalf("got %d %q, want 429", got.Status, got.Body)
				}
			default:
				if got.Status != 200 || got.Header.Get("RateLimit-Limit") != strconv.FormatInt(want.MonthlyLimit, 10) ||
					got.Header.Get("RateLimit-Remaining") != strconv.FormatInt(want.MonthlyLimit-1, 10) {
					t.Fatalf("got %d %v, want allowed with limit %d", got.Status, got.Header, want.MonthlyLimit)
				}
				if n := rs.Do("GET", counterNov+want.UserEmail); n != "1" {
					t.Fatalf("counter = %q, want 1", n)
				}
			}
		})
	}
}

func TestUnmeteredEmails(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok-trial", `{"UserEmail":"Trial-AbC@PESTO.teknologiumum.com","MonthlyLimit":1,"Revoked":false}`)
	rs.Do("SET", "tok-vip", `{"UserEmail":"boss@vip.example.com","MonthlyLimit":1,"Revoked":false}`)
	rs.Do("SET", "tok-rev", `{"UserEmail":"trial-x@pesto.teknologiumum.com","MonthlyLimit":1,"Revoked":true}`)

	app, _ := newTestApp(t, rs, nil, endOfMonth) // default pattern
	for i := 0; i < 3; i++ {
		if got := testCall(t, app, "GET", tokenHeader("tok-trial")); got.Status != 200 {
			t.Fatalf("trial call %d: %d %q", i, got.Status, got.Body)
		}
	}
	if got := rs.Do("EXISTS", counterNov+"Trial-AbC@PESTO.teknologiumum.com"); got != "0" {
		t.Fatal("an unmetered call was counted")
	}
	if got := testCall(t, app, "GET", tokenHeader("tok-rev")); got.Status != 401 {
		t.Fatalf("revoked unmetered key: %d", got.Status)
	}
	testCall(t, app, "GET", tokenHeader("tok-vip"))
	if got := testCall(t, app, "GET", tokenHeader("tok-vip")); got.Status != 429 {
		t.Fatalf("vip under the default pattern: %d", got.Status)
	}

	app, _ = newTestApp(t, rs, map[string]string{"UNMETERED_EMAILS": "*@VIP.example.com"}, endOfMonth)
	for i := 0; i < 3; i++ {
		if got := testCall(t, app, "GET", tokenHeader("tok-vip")); got.Status != 200 {
			t.Fatalf("vip call %d under its pattern: %d", i, got.Status)
		}
	}

	app, _ = newTestApp(t, rs, map[string]string{"UNMETERED_EMAILS": ""}, endOfMonth) // meter everyone
	testCall(t, app, "GET", tokenHeader("tok-trial"))
	if got := testCall(t, app, "GET", tokenHeader("tok-trial")); got.Status != 429 {
		t.Fatalf("trial with UNMETERED_EMAILS empty: %d", got.Status)
	}
}

// The counter's TTL is set when it is created and never pushed forward.
func TestCounterTTL(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok", validRecord)
	app, _ := newTestApp(t, rs, nil, endOfMonth)
	testCall(t, app, "GET", tokenHeader("tok"))
	key := counterNov + "jane@example.com"
	if ttl, _ := strconv.Atoi(rs.Do("TTL", key)); ttl < 3456000-60 || ttl > 3456000 {
		t.Fatalf("TTL at creation = %d, want 3456000", ttl)
	}
	rs.Do("EXPIRE", key, "100")
	testCall(t, app, "GET", tokenHeader("tok"))
	if ttl, _ := strconv.Atoi(rs.Do("TTL", key)); ttl > 100 || ttl < 90 {
		t.Fatalf("TTL after another call = %d, want <= 100 (never pushed forward)", ttl)
	}
	if got := rs.Do("GET", key); got != "2" {
		t.Fatalf("counter = %q", got)
	}
}

// A month's counter is its own: a new month starts from zero.
func TestNewMonthNewCounter(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok", `{"UserEmail":"m@example.com","MonthlyLimit":1,"Revoked":false}`)
	nov, _ := newTestApp(t, rs, nil, endOfMonth)
	dec, _ := newTestApp(t, rs, nil, endOfMonth.Add(2*time.Minute))
	if got := testCall(t, nov, "GET", tokenHeader("tok")); got.Status != 200 {
		t.Fatal(got)
	}
	if got := testCall(t, nov, "GET", tokenHeader("tok")); got.Status != 429 {
		t.Fatal(got)
	}
	got := testCall(t, dec, "GET", tokenHeader("tok"))
	if got.Status != 200 || got.Header.Get("RateLimit-Reset") != strconv.Itoa(31*24*3600-60) {
		t.Fatalf("December: %d %v", got.Status, got.Header)
	}
	if rs.Do("GET", "counter/2026-12/m@example.com") != "1" {
		t.Fatal("no December counter")
	}
}

// Requests the HTTP layer rejects get 400 Bad request, never an echo.
func TestRejectedByHTTPLayer(t *testing.T) {
	rs := redistest.Start(t)
	a := startAuth(t, map[string]string{"REDIS_URL": rs.URL})
	for name, req := range map[string]string{
		"control byte in a header": "GET / HTTP/1.1\r\nHost: x\r\nX-Pesto-Token: sec\x01ret\r\n\r\n",
		"NUL in a header":          "GET / HTTP/1.1\r\nHost: x\r\nX-Pesto-Token: sec\x00ret\r\n\r\n",
		"DEL in a header":          "GET / HTTP/1.1\r\nHost: x\r\nX-Pesto-Token: sec\x7fret\r\n\r\n",
		"header without colon":     "GET / HTTP/1.1\r\nHost: x\r\nX-Pesto-Token secret\r\n\r\n",
		"garbage request line":     "secret\r\n\r\n",
		"oversized head":           "GET / HTTP/1.1\r\nHost: x\r\nX-Pesto-Token: " + strings.Repeat("secret", 2000) + "\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			conn, err := net.Dial("tcp", "127.0.0.1:"+a.Port)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Write([]byte(req)); err != nil {
				t.Fatal(err)
			}
			res, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body := make([]byte, 100)
			n, _ := res.Body.Read(body)
			if res.StatusCode != 400 || string(body[:n]) != `{"message":"Bad request"}` {
				t.Fatalf("got %d %q", res.StatusCode, body[:n])
			}
			if res.Header.Get("Allow") != "" {
				t.Errorf("Allow: %q", res.Header.Get("Allow"))
			}
		})
	}
}

// counterModel is an in-memory countFunc and refundFunc with the scripts'
// semantics, whose calls can be held to line up a batch behind them.
type counterModel struct {
	mu      sync.Mutex
	used    map[string]int64
	calls   [][]entry // the entries of each call, in order
	refunds map[string]int64
	hold    chan struct{}
}

func newCounterModel() *counterModel {
	return &counterModel{used: map[string]int64{}, refunds: map[string]int64{}}
}

func (m *counterModel) count(ctx context.Context, deadline time.Time, entries []entry) error {
	if m.hold != nil {
		<-m.hold
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, slices.Clone(entries))
	if !deadline.IsZero() && time.Now().After(deadline) {
		return errLate
	}
	for i := range entries {
		e := &entries[i]
		e.before = m.used[e.key]
		e.granted = max(0, min(e.n, e.limit-e.before))
		m.used[e.key] = e.before + e.granted
	}
	return nil
}

func (m *counterModel) refund(ctx context.Context, key string, n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.used[key] -= n
	m.refunds[key] += n
	return nil
}

func (m *counterModel) newQuota() *quota {
	return newQuota(m.count, m.refund, func(string) uint16 { return 0 }, nil)
}

func (q *quota) idle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queues) == 0
}

// Calls of any keys that arrive while a batch is on its way are counted
// together by the next script call, each key exactly.
func TestQuotaBatchesBehindACallInFlight(t *testing.T) {
	m := newCounterModel()
	m.hold = make(chan struct{})
	q := m.newQuota()
	ctx := context.Background()
	const limit, waiting = 6, 9

	type answer struct {
		key     string
		used    int64
		allowed bool
	}
	first := make(chan answer)
	go func() {
		used, ok, _ := q.Count(ctx, "a", limit)
		first <- answer{"a", used, ok}
	}()
	// Wait until the first call is on its way, then line up the others:
	// waiting calls of "a" and waiting of "b".
	servicetest.Poll(t, 5*time.Second, "first call on its way", func() bool { return !q.idle() })
	answers := make(chan answer, 2*waiting)
	for i := 0; i < 2*waiting; i++ {
		key := []string{"a", "b"}[i%2]
		go func() {
			used, ok, err := q.Count(ctx, key, limit)
			if err != nil {
				t.Error(err)
			}
			answers <- answer{key, used, ok}
		}()
	}
	servicetest.Poll(t, 5*time.Second, "the others lined up behind it", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		next := q.queues[0].next
		return next != nil && len(next.entries) == 2 && next.entries[0].n+next.entries[1].n == 2*waiting
	})
	close(m.hold)

	if a := <-first; a != (answer{"a", 1, true}) {
		t.Fatalf("first call: %+v", a)
	}
	used := map[string][]int64{}
	denied := map[string]int{}
	for i := 0; i < 2*waiting; i++ {
		a := <-answers
		if a.allowed {
			used[a.key] = append(used[a.key], a.used)
		} else {
			denied[a.key]++
		}
	}
	slices.Sort(used["a"])
	slices.Sort(used["b"])
	if !slices.Equal(used["a"], []int64{2, 3, 4, 5, 6}) || denied["a"] != 4 ||
		!slices.Equal(used["b"], []int64{1, 2, 3, 4, 5, 6}) || denied["b"] != 3 {
		t.Fatalf("allowed with counts %v, denied %v; want a: 2..6 and 4 denied, b: 1..6 and 3 denied", used, denied)
	}
	if len(m.calls) != 2 || len(m.calls[0]) != 1 || len(m.calls[1]) != 2 {
		t.Fatalf("script calls %v, want 2: the waiting calls in one", m.calls)
	}
	servicetest.Poll(t, 5*time.Second, "queue retired", q.idle)
}

// Under any interleaving the quota is exact and the calls are answered.
func TestQuotaExactUnderRaces(t *testing.T) {
	m := newCounterModel()
	q := m.newQuota()
	const limit, calls, keys = 100, 3000, 3
	var mu sync.Mutex
	allowed := map[string]map[int64]bool{}
	var wg sync.WaitGroup
	for i := 0; i < calls; i++ {
		wg.Add(1)
		key := strconv.Itoa(i % keys)
		go func() {
			defer wg.Done()
			used, ok, err := q.Count(context.Background(), key, limit)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				if allowed[key] == nil {
					allowed[key] = map[int64]bool{}
				}
				if allowed[key][used] {
					t.Errorf("%s: count %d given twice", key, used)
				}
				allowed[key][used] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for k := 0; k < keys; k++ {
		key := strconv.Itoa(k)
		if len(allowed[key]) != limit || m.used[key] != limit {
			t.Fatalf("%s: %d allowed, counter %d; want %d", key, len(allowed[key]), m.used[key], limit)
		}
	}
	t.Logf("%d calls in %d script calls", calls, len(m.calls))
}

func TestQuotaErrorReachesTheBatch(t *testing.T) {
	boom := errors.New("redis down")
	q := newQuota(func(context.Context, time.Time, []entry) error { return boom }, nil, func(string) uint16 { return 0 }, nil)
	if _, ok, err := q.Count(context.Background(), "k", 5); ok || !errors.Is(err, boom) {
		t.Fatalf("got %v %v", ok, err)
	}
	servicetest.Poll(t, 5*time.Second, "queue retired after an error", q.idle)
}

// A call whose reply comes after it gave up (answered 500) is not counted:
// what the script granted it is refunded, exactly.
func TestQuotaRefundsALateGrant(t *testing.T) {
	m := newCounterModel()
	m.hold = make(chan struct{})
	q := m.newQuota()
	// The script's deadline is far: only the caller's patience runs out.
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	gaveUp, giveUp := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, _, err := q.Count(gaveUp, "k", 10)
		errc <- err
	}()
	servicetest.Poll(t, 5*time.Second, "call on its way", func() bool { return !q.idle() })
	giveUp()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("gave up with %v", err)
	}
	close(m.hold) // the reply comes in: one call granted to no one
	servicetest.Poll(t, 5*time.Second, "late grant refunded", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.refunds["k"] == 1 && m.used["k"] == 0
	})
	if used, ok, err := q.Count(ctx, "k", 10); used != 1 || !ok || err != nil {
		t.Fatalf("next call: %d %v %v, want the first of the month", used, ok, err)
	}
}

// A batch whose deadline has passed before it could be sent is not sent:
// its calls get errLate and nothing is counted.
func TestQuotaPastDeadlineSendsNothing(t *testing.T) {
	m := newCounterModel()
	q := m.newQuota()
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(countGrace/2))
	defer cancel()
	if _, ok, err := q.Count(ctx, "k", 10); ok || !errors.Is(err, errLate) {
		t.Fatalf("got %v %v, want errLate", ok, err)
	}
	if len(m.calls) != 0 || m.used["k"] != 0 {
		t.Fatalf("sent %v, counter %d", m.calls, m.used["k"])
	}
}

// The counter script itself, on a real Redis: past its deadline (by Redis's
// clock) it counts nothing and writes nothing; before it, it counts.
func TestCounterScriptDeadline(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client()
	ctx := context.Background()
	key := counterNov + "late@example.com"
	past := strconv.FormatInt(time.Now().Add(-time.Second).UnixMicro(), 10)
	reply, err := counterScript.Exec(ctx, c, []string{key}, []string{past, counterTTL, "10", "1"}).ToArray()
	if err != nil || len(reply) != 0 || rs.Do("EXISTS", key) != "0" {
		t.Fatalf("past the deadline: %v %v, counter exists: %s", reply, err, rs.Do("EXISTS", key))
	}
	future := strconv.FormatInt(time.Now().Add(time.Minute).UnixMicro(), 10)
	reply, err = counterScript.Exec(ctx, c, []string{key}, []string{future, counterTTL, "10", "3"}).ToArray()
	if err != nil || len(reply) != 2 || rs.Do("GET", key) != "3" {
		t.Fatalf("before the deadline: %v %v, counter %s", reply, err, rs.Do("GET", key))
	}
	// One counter twice in a batch (its record changed in between): the
	// second entry sees what the first counted.
	got, err := counterScript.Exec(ctx, c, []string{key, key}, []string{future, counterTTL, "6", "4", "10", "4"}).AsIntSlice()
	if err != nil || !slices.Equal(got, []int64{3, 3, 6, 4}) || rs.Do("GET", key) != "10" {
		t.Fatalf("one counter twice: %v %v, counter %s", got, err, rs.Do("GET", key))
	}
}

// hashSlot agrees with Redis Cluster's CLUSTER KEYSLOT.
func TestHashSlot(t *testing.T) {
	rs := redistest.StartCluster(t)
	for _, key := range []string{"foo", "{user1000}.following", "a{}b", "a{b", "{", "", counterNov + "jane@example.com", "é"} {
		want, _ := strconv.Atoi(rs.Do("CLUSTER", "KEYSLOT", key))
		if got := hashSlot(key); int(got) != want {
			t.Errorf("hashSlot(%q) = %d, want %d", key, got, want)
		}
	}
}

// A flood of calls refused over quota writes nothing to Redis: the AOF does
// not grow and the counter stays at the limit.
func TestOverQuotaFloodWritesNothing(t *testing.T) {
	rs := redistest.StartStandalone(t, "--appendonly", "yes", "--appendfsync", "always")
	rs.Do("SET", "tok-full", `{"UserEmail":"full@example.com","MonthlyLimit":3,"Revoked":false}`)
	a := startAuth(t, map[string]string{"REDIS_URL": rs.URL, "LOG_LEVEL": "warn"})
	for i := 0; i < 3; i++ {
		if got := call(t, "GET", a.URL, "tok-full"); got.Status != 200 {
			t.Fatalf("call %d: %+v", i, got)
		}
	}
	// The third call reached the limit: its quota warning is written first.
	servicetest.Poll(t, 5*time.Second, "the quota warning queued", func() bool { return rs.Do("XLEN", wire.OutboxStream) == "1" })
	aofSize := func() string {
		for _, line := range strings.Split(rs.Do("INFO", "persistence"), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "aof_current_size:"); ok {
				return v
			}
		}
		t.Fatal("no aof_current_size in INFO persistence")
		return ""
	}
	before := aofSize()
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				if got := call(t, "GET", a.URL, "tok-full"); got.Status != 429 {
					t.Errorf("over quota: %+v", got)
					return
				}
			}
		}()
	}
	wg.Wait()
	key := "counter/" + time.Now().UTC().Format("2006-01") + "/full@example.com"
	if after := aofSize(); after != before || rs.Do("GET", key) != "3" {
		t.Fatalf("AOF %s → %s bytes, counter %s: want no write", before, after, rs.Do("GET", key))
	}
}

// commandCalls is how many times a command ran on a standalone Redis (INFO
// commandstats; the scripts are the evalsha calls).
func commandCalls(t *testing.T, rs *redistest.Server, command string) int {
	t.Helper()
	for _, line := range strings.Split(rs.Do("INFO", "commandstats"), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+command+":calls="); ok {
			n, _ := strconv.Atoi(v[:strings.IndexByte(v, ',')])
			return n
		}
	}
	return 0
}

// A counter this replica saw well below its limit is counted with a plain
// INCRBY, not the script: the first call reads it through the script, the
// next ones do not, and the count stays exact.
func TestCounterWellBelowItsLimitSkipsTheScript(t *testing.T) {
	rs := redistest.StartStandalone(t)
	rs.Do("SET", "tok", validRecord) // limit 100
	app, _ := newTestApp(t, rs, nil, endOfMonth)
	key := counterNov + "jane@example.com"
	for i := 1; i <= 10; i++ {
		got := testCall(t, app, "GET", tokenHeader("tok"))
		if got.Status != 200 || got.Header.Get("RateLimit-Remaining") != strconv.Itoa(100-i) {
			t.Fatalf("call %d: %d, RateLimit-Remaining %q", i, got.Status, got.Header.Get("RateLimit-Remaining"))
		}
	}
	if n := commandCalls(t, rs, "evalsha"); n != 1 {
		t.Errorf("the counter script ran %d times for 10 calls far from the limit, want 1 (the first)", n)
	}
	if got := rs.Do("GET", key); got != "10" {
		t.Fatalf("counter = %q, want 10", got)
	}
	if ttl, _ := strconv.Atoi(rs.Do("TTL", key)); ttl < 3456000-60 {
		t.Fatalf("TTL = %d, want the one set at creation", ttl)
	}
}

// Another replica takes a counter to its limit behind this one's back: the
// plain INCRBY that passes the limit is refused, its excess given back at
// once (the counter stays at the limit), and from then on the counter is
// checked by the script, which writes nothing for a refused call.
func TestPlainCountPassingTheLimitGivesTheExcessBack(t *testing.T) {
	rs := redistest.StartStandalone(t, "--appendonly", "yes", "--appendfsync", "always")
	rs.Do("SET", "tok", validRecord) // limit 100
	app, _ := newTestApp(t, rs, nil, endOfMonth)
	key := counterNov + "jane@example.com"
	if got := testCall(t, app, "GET", tokenHeader("tok")); got.Status != 200 {
		t.Fatalf("first call: %d", got.Status)
	}
	rs.Do("INCRBY", key, "99") // the other replicas' calls: at the limit now
	got := testCall(t, app, "GET", tokenHeader("tok"))
	if got.Status != 429 || got.Body != `{"message":"Monthly limit exceeded"}` {
		t.Fatalf("past the limit: %d %q, want 429", got.Status, got.Body)
	}
	if got := rs.Do("GET", key); got != "100" {
		t.Fatalf("counter = %q after the refused call, want 100", got)
	}
	aof := rs.Do("INFO", "persistence")
	for i := 0; i < 5; i++ {
		if got := testCall(t, app, "GET", tokenHeader("tok")); got.Status != 429 {
			t.Fatalf("over quota: %d", got.Status)
		}
	}
	if after := rs.Do("INFO", "persistence"); aofLine(after) != aofLine(aof) {
		t.Fatalf("refused calls wrote to Redis: %s → %s", aofLine(aof), aofLine(after))
	}
}

func aofLine(info string) string {
	for _, line := range strings.Split(info, "\n") {
		if strings.HasPrefix(line, "aof_current_size:") {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// A counter deleted meanwhile (by an operator) is made again by the plain
// INCRBY and gets its TTL.
func TestPlainCountRecreatesTheTTL(t *testing.T) {
	rs := redistest.StartStandalone(t)
	rs.Do("SET", "tok", validRecord)
	app, _ := newTestApp(t, rs, nil, endOfMonth)
	key := counterNov + "jane@example.com"
	testCall(t, app, "GET", tokenHeader("tok"))
	rs.Do("DEL", key)
	if got := testCall(t, app, "GET", tokenHeader("tok")); got.Status != 200 {
		t.Fatalf("after DEL: %d", got.Status)
	}
	if got, ttl := rs.Do("GET", key), rs.Do("TTL", key); got != "1" || ttl != "3456000" && ttl != "3455999" {
		t.Fatalf("counter %q TTL %s, want 1 and 3456000", got, ttl)
	}
}
