package main

import (
	"strconv"
	"strings"
	"sync"
	"testing"

	"pesto/shared/redistest"
	"pesto/shared/wire"
)

// Signups cannot take Redis to maxmemory, by construction: a stored signup
// is at most 1 KiB and the list holds at most WAITING_LIST_MAX of them, so a
// Redis sized for WAITING_LIST_MAX × the cost of one (its element and its
// entry in the index of people) keeps room for auth's counter steps however
// many signups arrive, from however many addresses. Here three times the
// bound of the largest signups the service accepts, from a new address each
// through a trusted proxy, against a Redis whose maxmemory is the bound's
// cost plus 1 MiB of headroom: every answer is 201 or 503 (never a 500 for
// an out-of-memory write), the list stops at the bound, and a write of auth's
// kind still succeeds.
func TestSignupsCannotFillRedis(t *testing.T) {
	const (
		listMax = 1000
		// perSignup bounds what one listed signup costs Redis: its
		// element (at most maxStoredSignup) and its index entry (the same
		// bytes again and the person), with the structures' overhead.
		perSignup = 3584
		attempts  = 3 * listMax
		workers   = 16
	)
	// The baseline of an empty redis-server is about 1 MiB. (A signup costs
	// about 2.9 KiB measured: 3.5 KiB leaves room for the allocator.)
	maxmemory := 1<<20 + listMax*perSignup + 1<<20
	rs := redistest.StartStandalone(t, "--maxmemory", strconv.Itoa(maxmemory), "--maxmemory-policy", "noeviction")
	base, _ := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "WAITING_LIST_MAX": strconv.Itoa(listMax),
		"TRUSTED_PROXIES": "127.0.0.1"})
	usedMemory := func() int {
		for _, line := range strings.Split(rs.Do("INFO", "memory"), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
				n, err := strconv.Atoi(v)
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
		}
		t.Fatal("INFO memory has no used_memory")
		return 0
	}
	before := usedMemory()

	// The largest signup accepted: the building fills what the 1 KiB bound
	// leaves after the longest name and a long email.
	largest := func(i int) string {
		s := wire.Signup{Name: strings.Repeat("N", maxNameRunes),
			Email: "flood-" + strconv.Itoa(i) + "-" + strings.Repeat("e", 150) + "@example.com", Calls: maxCalls}
		s.Building = strings.Repeat("b", maxStoredSignup-len(s.Encode()))
		return string(s.Encode())
	}
	if n := len(largest(attempts)); n != maxStoredSignup {
		t.Fatalf("the largest signup is %d bytes, want %d", n, maxStoredSignup)
	}

	var (
		mu    sync.Mutex
		codes = map[int]int{}
		other []string
		wg    sync.WaitGroup
		next  = make(chan int)
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				xff := "198.51." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256)
				r := send(t, "POST", base+"/api/register", largest(i), "X-Forwarded-For", xff)
				mu.Lock()
				codes[r.status]++
				if r.status != 201 && (r.status != 503 || r.body != `{"message":"Waiting list is full"}`) {
					other = append(other, strconv.Itoa(r.status)+" "+r.body)
				}
				mu.Unlock()
			}
		}()
	}
	for i := range attempts {
		next <- i
	}
	close(next)
	wg.Wait()

	if len(other) > 0 || codes[201] != listMax || codes[503] != attempts-listMax {
		t.Fatalf("answers %v, want %d × 201 and %d × 503; others: %q", codes, listMax, attempts-listMax, other[:min(len(other), 3)])
	}
	if got := rs.Do("LLEN", wire.WaitingList); got != strconv.Itoa(listMax) {
		t.Fatalf("LLEN = %s, want %d", got, listMax)
	}
	grown := usedMemory() - before
	t.Logf("Redis grew by %d bytes for %d listed signups (%d each), maxmemory %d", grown, listMax, grown/listMax, maxmemory)
	if grown > listMax*perSignup {
		t.Fatalf("Redis grew by %d bytes, over %d × %d", grown, listMax, perSignup)
	}
	// auth's kind of write still has room.
	if got := rs.Do("INCR", "counter/2026-12/paying@example.com"); got != "1" {
		t.Fatalf("INCR after the flood: %s", got)
	}
}
