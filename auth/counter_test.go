package main

import (
	"context"
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

// The counter script itself, on a real Redis: past its deadline (by Redis's
// clock) it counts nothing and writes nothing; before it, it counts.
func TestCounterScriptDeadline(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client()
	ctx := context.Background()
	key := counterNov + "late@example.com"
	past := strconv.FormatInt(time.Now().Add(-time.Second).UnixMicro(), 10)
	reply, err := counterScript.Exec(ctx, c, []string{key}, []string{past, counterTTL, nowArg(), "10", "1", ""}).ToArray()
	if err != nil || len(reply) != 0 || rs.Do("EXISTS", key) != "0" {
		t.Fatalf("past the deadline: %v %v, counter exists: %s", reply, err, rs.Do("EXISTS", key))
	}
	future := strconv.FormatInt(time.Now().Add(time.Minute).UnixMicro(), 10)
	reply, err = counterScript.Exec(ctx, c, []string{key}, []string{future, counterTTL, nowArg(), "10", "3", ""}).ToArray()
	if err != nil || len(reply) != counterReplyLen || rs.Do("GET", key) != "3" {
		t.Fatalf("before the deadline: %v %v, counter %s", reply, err, rs.Do("GET", key))
	}
	// One counter twice in a batch (its record changed in between): the
	// second entry sees what the first counted.
	got, err := counterScript.Exec(ctx, c, []string{key, key}, []string{future, counterTTL, nowArg(), "6", "4", "", "10", "4", ""}).AsIntSlice()
	if err != nil || !slices.Equal(got, []int64{3, 3, -1, 0, 6, 4, -1, 0}) || rs.Do("GET", key) != "10" {
		t.Fatalf("one counter twice: %v %v, counter %s", got, err, rs.Do("GET", key))
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
	refusedFloodWritesNothing(t, rs, a.URL, "tok-full", `{"message":"Monthly limit exceeded"}`)
	key := "counter/" + time.Now().UTC().Format("2006-01") + "/full@example.com"
	if got := rs.Do("GET", key); got != "3" {
		t.Fatalf("counter %s, want 3", got)
	}
}

// refusedFloodWritesNothing sends 200 calls of token, 8 at a time, each of
// which must be refused with a 429 and body, and wants Redis's AOF not to
// grow meanwhile.
func refusedFloodWritesNothing(t *testing.T, rs *redistest.Server, url, token, body string) {
	t.Helper()
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
	for range 8 {
		wg.Go(func() {
			for range 25 {
				if got := call(t, "GET", url, token); got.Status != 429 || got.Body != body {
					t.Errorf("got %d %q, want 429 %s", got.Status, got.Body, body)
					return
				}
			}
		})
	}
	wg.Wait()
	if after := aofSize(); after != before {
		t.Fatalf("AOF %s → %s bytes under refused calls: want no write", before, after)
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

// nowArg is counterScript's argument of the calls' time: now.
func nowArg() string { return strconv.FormatInt(time.Now().UnixMicro(), 10) }
