package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"pesto/shared/redistest"
	"pesto/shared/servicetest"
	"pesto/shared/wire"
)

// outbox returns the fields of every entry of the outbox stream, in order.
func outbox(t *testing.T, rs *redistest.Server) []map[string]string {
	t.Helper()
	c := rs.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	entries, err := c.Do(ctx, c.B().Xrange().Key(wire.OutboxStream).Start("-").End("+").Build()).AsXRange()
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]string
	for _, e := range entries {
		out = append(out, e.FieldValues)
	}
	return out
}

func warningFields(to string, percent int, used, limit int64, month string) map[string]string {
	return map[string]string{"kind": "quota-warning", "to": to, "percent": strconv.Itoa(percent),
		"used": strconv.FormatInt(used, 10), "limit": strconv.FormatInt(limit, 10), "month": month}
}

// The 8th of 10 calls queues the 80 % warning, the 10th the 100 % one, in
// the format registration reads; nothing else queues anything.
func TestQuotaWarnings(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok", `{"UserEmail":"Jane@Example.com","MonthlyLimit":10,"Revoked":false}`)
	rs.Do("SET", "tok-trial", `{"UserEmail":"trial-x@pesto.teknologiumum.com","MonthlyLimit":1,"Revoked":false}`)
	app, _ := newTestApp(t, rs, nil, endOfMonth)

	for i := 1; i <= 12; i++ {
		want := 200
		if i > 10 {
			want = 429
		}
		if got := testCall(t, app, "GET", tokenHeader("tok")); got.Status != want {
			t.Fatalf("call %d: %d, want %d", i, got.Status, want)
		}
		if i == 7 {
			if n := len(outbox(t, rs)); n != 0 {
				t.Fatalf("%d entries after 7 of 10 calls, want none", n)
			}
		}
	}
	for range 3 { // unmetered (the default pattern): never warned
		testCall(t, app, "GET", tokenHeader("tok-trial"))
	}
	want := []map[string]string{
		warningFields("Jane@Example.com", 80, 8, 10, "2026-11"),
		warningFields("Jane@Example.com", 100, 10, 10, "2026-11"),
	}
	var got []map[string]string
	servicetest.Poll(t, 5*time.Second, "two warnings queued", func() bool {
		got = outbox(t, rs)
		return len(got) >= 2
	})
	// Each is queued in the background of its call: in either order.
	slices.SortFunc(got, func(a, b map[string]string) int {
		x, _ := strconv.Atoi(a["percent"])
		y, _ := strconv.Atoi(b["percent"])
		return x - y
	})
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("outbox\n got %v\nwant %v", got, want)
	}
	for _, f := range got {
		if e, ok := wire.ParseOutboxEntry(f); !ok || e.Warning == nil {
			t.Errorf("entry %v does not read as a warning", f)
		}
	}
	for _, p := range []string{"80", "100"} {
		key := "pesto:{waiting-list}:warned:2026-11:" + p + ":Jane@Example.com"
		if ttl, _ := strconv.Atoi(rs.Do("TTL", key)); ttl < 3456000-60 || ttl > 3456000 {
			t.Errorf("%s TTL = %d, want the counter's 3456000", key, ttl)
		}
	}
	if got := rs.Do("GET", counterNov+"Jane@Example.com"); got != "10" {
		t.Errorf("counter = %s", got)
	}
}

// A threshold is queued once even when the crossing call happens again (a
// call whose count was refunded, a retry): the marker holds it.
func TestQuotaWarningOncePerMonth(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok", `{"UserEmail":"once@example.com","MonthlyLimit":5,"Revoked":false}`)
	rs.Do("SET", counterNov+"once@example.com", "3")
	app, _ := newTestApp(t, rs, map[string]string{"QUOTA_WARNINGS": "80"}, endOfMonth)

	testCall(t, app, "GET", tokenHeader("tok")) // the 4th of 5: 80 %
	servicetest.Poll(t, 5*time.Second, "the warning queued", func() bool { return len(outbox(t, rs)) == 1 })
	rs.Do("SET", counterNov+"once@example.com", "3") // as if the 4th were refunded
	testCall(t, app, "GET", tokenHeader("tok"))      // the 4th again
	testCall(t, app, "GET", tokenHeader("tok"))      // the 5th: no threshold at 100 % here
	// A later month is warned anew.
	dec, _ := newTestApp(t, rs, map[string]string{"QUOTA_WARNINGS": "80"}, endOfMonth.Add(time.Hour))
	for range 4 {
		testCall(t, dec, "GET", tokenHeader("tok"))
	}
	servicetest.Poll(t, 5*time.Second, "December's warning", func() bool { return len(outbox(t, rs)) == 2 })
	got := outbox(t, rs)
	want := []map[string]string{warningFields("once@example.com", 80, 4, 5, "2026-11"), warningFields("once@example.com", 80, 4, 5, "2026-12")}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("outbox\n got %v\nwant %v", got, want)
	}
}

// Exactly once whatever the number of replicas: two auth processes, many
// racing calls on keys of one email.
func TestQuotaWarningsAcrossReplicas(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok-a", `{"UserEmail":"race@example.com","MonthlyLimit":50,"Revoked":false}`)
	rs.Do("SET", "tok-b", `{"UserEmail":"race@example.com","MonthlyLimit":50,"Revoked":false}`)
	env := map[string]string{"REDIS_URL": rs.URL, "QUOTA_WARNINGS": "50,80,100"}
	a, b := startAuth(t, env), startAuth(t, env)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			base, token := a.URL, "tok-a"
			if w%2 == 1 {
				base, token = b.URL, "tok-b"
			}
			for range 10 {
				if call(t, "GET", base, token).Status == 200 {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if allowed != 50 {
		t.Fatalf("%d calls allowed, want 50", allowed)
	}
	var got []map[string]string
	servicetest.Poll(t, 5*time.Second, "three warnings", func() bool {
		got = outbox(t, rs)
		return len(got) >= 3
	})
	var percents []string
	for _, f := range got {
		percents = append(percents, f["percent"]+"@"+f["used"])
	}
	slices.Sort(percents)
	if want := []string{"100@50", "50@25", "80@40"}; !slices.Equal(percents, want) {
		t.Fatalf("warnings %v, want %v (one per threshold)", percents, want)
	}
}

// QUOTA_WARNINGS empty: no warning at all.
func TestQuotaWarningsOff(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok", `{"UserEmail":"off@example.com","MonthlyLimit":2,"Revoked":false}`)
	app, _ := newTestApp(t, rs, map[string]string{"QUOTA_WARNINGS": ""}, endOfMonth)
	for range 3 {
		testCall(t, app, "GET", tokenHeader("tok"))
	}
	if n := rs.Do("EXISTS", wire.OutboxStream); n != "0" {
		t.Fatalf("the outbox exists: %v", outbox(t, rs))
	}
}

func TestThresholds(t *testing.T) {
	w := &warnings{percents: []int{80, 100}}
	for _, c := range []struct {
		limit, used int64
		want        int
	}{
		{10, 7, 0}, {10, 8, 80}, {10, 9, 0}, {10, 10, 100}, {10, 11, 0},
		{1, 1, 100}, // 80 % and 100 % on one call: the highest only
		{3, 3, 100}, {3, 2, 0},
		{5, 4, 80},
		{1000, 800, 80}, {1001, 801, 80}, {1001, 800, 0},
		{1 << 62, 1 << 62, 100},
		{(1 << 62) + 1, (1<<62)/100*80 + (4*80+99)/100, 80},
	} {
		if got := w.crossed(c.limit, c.used); got != c.want {
			t.Errorf("crossed(%d, %d) = %d, want %d", c.limit, c.used, got, c.want)
		}
	}
}

// Trial keys metered (UNMETERED_EMAILS empty, as compose has it): anyone may
// take trial keys and use up their 10 calls, and their addresses are made
// up. Before, each such key queued two warnings to trial-…@<domain> (100
// keys: 202 emails in half a second). Now none is queued, while a person's
// key beside them is warned as ever.
func TestNoQuotaWarningToTrialKeys(t *testing.T) {
	rs := redistest.Start(t)
	const keys = 40
	for i := range keys {
		email := fmt.Sprintf("trial-%020d@pesto.teknologiumum.com", i)
		if !wire.IsTrialEmail(email) {
			t.Fatalf("%s is not a trial address", email)
		}
		rs.Do("SET", fmt.Sprintf("TRIAL-%058d", i), `{"UserEmail":"`+email+`","MonthlyLimit":10,"Revoked":false}`)
	}
	rs.Do("SET", "tok-person", `{"UserEmail":"person@example.com","MonthlyLimit":10,"Revoked":false}`)
	app, _ := newTestApp(t, rs, map[string]string{"UNMETERED_EMAILS": ""}, endOfMonth)

	for i := range keys {
		for call := 1; call <= 11; call++ {
			want := 200
			if call > 10 {
				want = 429
			}
			if got := testCall(t, app, "GET", tokenHeader(fmt.Sprintf("TRIAL-%058d", i))); got.Status != want {
				t.Fatalf("trial key %d, call %d: %d, want %d (metered)", i, call, got.Status, want)
			}
		}
	}
	for range 8 {
		testCall(t, app, "GET", tokenHeader("tok-person"))
	}
	// The person's warning is queued in the background of the 8th call;
	// every trial key's crossing calls came before it.
	servicetest.Poll(t, 5*time.Second, "the person's warning", func() bool { return len(outbox(t, rs)) > 0 })
	if got, want := fmt.Sprint(outbox(t, rs)), fmt.Sprint([]map[string]string{warningFields("person@example.com", 80, 8, 10, "2026-11")}); got != want {
		t.Fatalf("outbox\n got %v\nwant %v", got, want)
	}
	if n := rs.Keys("pesto:{waiting-list}:warned:*trial-*"); len(n) != 0 {
		t.Fatalf("warning markers of trial keys: %v", n)
	}
}
