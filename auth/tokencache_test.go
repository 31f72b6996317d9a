package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"pesto/shared/redistest"
	"pesto/shared/servicetest"
)

// cachingClient is a rueidis client on rs whose client-side cache is
// tokenCache with a budget of maxBytes per connection; stores returns the
// caches it made.
func cachingClient(t *testing.T, rs *redistest.Server, maxBytes int) (rueidis.Client, func() []*tokenCache) {
	t.Helper()
	opt, err := rueidis.ParseURL(rs.URL)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var made []*tokenCache
	opt.CacheSizeEachConn = maxBytes
	opt.NewCacheStoreFn = func(o rueidis.CacheStoreOption) rueidis.CacheStore {
		mu.Lock()
		defer mu.Unlock()
		c := newTokenCache(o.CacheSizeEachConn)
		made = append(made, c)
		return c
	}
	c, err := rueidis.NewClient(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, func() []*tokenCache {
		mu.Lock()
		defer mu.Unlock()
		return append([]*tokenCache(nil), made...)
	}
}

// cacheGet reads key through the cache: its value ("" when missing) and
// whether it was a hit.
func cacheGet(t *testing.T, c rueidis.Client, key string, ttl time.Duration) (string, bool) {
	t.Helper()
	res := c.DoCache(context.Background(), c.B().Get().Key(key).Cache(), ttl)
	v, err := res.ToString()
	if err != nil && !rueidis.IsRedisNil(err) {
		t.Fatalf("GET %s: %v", key, err)
	}
	return v, res.IsCacheHit()
}

// A key is read once, then served from the cache until it is written,
// created or deleted: Redis's invalidation drops it at once.
func TestTokenCacheInvalidation(t *testing.T) {
	rs := redistest.Start(t)
	c, _ := cachingClient(t, rs, 1<<20)
	if v, hit := cacheGet(t, c, "k", time.Hour); v != "" || hit {
		t.Fatalf("first read: %q, hit %v; want a miss of nothing", v, hit)
	}
	if v, hit := cacheGet(t, c, "k", time.Hour); v != "" || !hit {
		t.Fatalf("second read: %q, hit %v; want nothing, from the cache", v, hit)
	}
	for _, step := range []struct {
		write []string
		want  string
	}{
		{[]string{"SET", "k", "one"}, "one"},
		{[]string{"SET", "k", "two"}, "two"},
		{[]string{"DEL", "k"}, ""},
	} {
		rs.Do(step.write...)
		servicetest.Poll(t, time.Second, step.write[0]+" seen through the cache", func() bool {
			v, _ := cacheGet(t, c, "k", time.Hour)
			return v == step.want
		})
		if v, hit := cacheGet(t, c, "k", time.Hour); v != step.want || !hit {
			t.Fatalf("after %v: %q, hit %v; want %q from the cache", step.write, v, hit, step.want)
		}
	}
}

// An entry lasts the shorter of the client's TTL and the key's own.
func TestTokenCacheTTLs(t *testing.T) {
	rs := redistest.Start(t)
	c, stores := cachingClient(t, rs, 1<<20)
	rs.Do("SET", "short", "v", "PX", "300000")
	rs.Do("SET", "long", "v")
	start := time.Now()
	cacheGet(t, c, "short", time.Hour)
	cacheGet(t, c, "long", time.Hour)
	cacheGet(t, c, "brief", 200*time.Millisecond)

	xat := map[string]int64{}
	for _, s := range stores() {
		s.mu.RLock()
		for key, e := range s.entries {
			xat[key] = e.xat
		}
		s.mu.RUnlock()
	}
	for key, want := range map[string]time.Duration{"short": 300 * time.Second, "long": time.Hour, "brief": 200 * time.Millisecond} {
		got := time.Duration(xat[key]-start.UnixMilli()) * time.Millisecond
		if got < want-time.Second || got > want+time.Second {
			t.Errorf("%s expires in %s, want %s", key, got, want)
		}
	}
	servicetest.Poll(t, 2*time.Second, "the client's TTL to pass", func() bool {
		_, hit := cacheGet(t, c, "brief", 200*time.Millisecond)
		return !hit
	})
	if elapsed := time.Since(start); elapsed < 200*time.Millisecond {
		t.Errorf("entry of a 200ms TTL read again from Redis after %s", elapsed)
	}
}

// The cache stays within its budget, and an entry in use outlives those
// that are not (CLOCK's second chance).
func TestTokenCacheBudget(t *testing.T) {
	rs := redistest.Start(t)
	const budget = 20 * (cachedOverhead + 10)
	c, stores := cachingClient(t, rs, budget)
	cacheGet(t, c, "hot", time.Hour)
	for i := range 500 {
		cacheGet(t, c, fmt.Sprintf("cold-%d", i), time.Hour)
		if _, hit := cacheGet(t, c, "hot", time.Hour); !hit && i > 0 {
			t.Fatalf("the key in use was evicted after %d others", i)
		}
	}
	for _, s := range stores() {
		s.mu.RLock()
		size, n, keys := s.size, s.n, len(s.entries)
		s.mu.RUnlock()
		if size > budget || n != keys || n > 20 {
			t.Errorf("cache of %d entries (%d keys), %d bytes: want at most 20 and %d bytes", n, keys, size, budget)
		}
	}
}

// One read of a missing entry goes to Redis; the others wait for it and get
// its reply, or its error. A closed cache hands its flights the error and
// keeps nothing.
func TestTokenCacheFlights(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "k", "v")
	reply, err := rs.Client().Do(context.Background(), rs.Client().B().Get().Key("k").Build()).ToMessage()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ctx := context.Background()
	c := newTokenCache(1 << 20)

	if v, f := c.Flight("k", "GET", time.Hour, now); !isEmpty(v) || f != nil {
		t.Fatal("first miss: want to be sent to Redis")
	}
	_, f := c.Flight("k", "GET", time.Hour, now)
	if f == nil {
		t.Fatal("second miss: want to wait for the first")
	}
	if pxat := c.Update("k", "GET", reply); pxat != now.Add(time.Hour).UnixMilli() {
		t.Errorf("Update: PXAT %d, want the client's %d", pxat, now.Add(time.Hour).UnixMilli())
	}
	if v, err := f.Wait(ctx); err != nil || mustString(t, v) != "v" {
		t.Errorf("waiter: %v, %v; want v", v, err)
	}
	if v, f := c.Flight("k", "GET", time.Hour, now); f != nil || mustString(t, v) != "v" {
		t.Errorf("after the reply: want a hit")
	}

	cancelled := errors.New("connection lost")
	c.Flight("x", "GET", time.Hour, now)
	_, f = c.Flight("x", "GET", time.Hour, now)
	c.Cancel("x", "GET", cancelled)
	if _, err := f.Wait(ctx); !errors.Is(err, cancelled) {
		t.Errorf("waiter of a cancelled flight: %v", err)
	}
	if v, f := c.Flight("x", "GET", time.Hour, now); !isEmpty(v) || f != nil {
		t.Error("after a cancel: want a new miss")
	}

	_, f = c.Flight("x", "GET", time.Hour, now)
	c.Delete(nil) // an invalidation of everything keeps the flights
	c.Close(cancelled)
	if _, err := f.Wait(ctx); !errors.Is(err, cancelled) {
		t.Errorf("waiter at Close: %v", err)
	}
	if v, f := c.Flight("k", "GET", time.Hour, now); !isEmpty(v) || f != nil {
		t.Error("after Close: want every read sent to Redis")
	}
	if pxat := c.Update("k", "GET", reply); pxat != 0 || c.n != 0 || c.size != 0 {
		t.Errorf("after Close: Update kept something (PXAT %d, %d entries, %d bytes)", pxat, c.n, c.size)
	}
}

// Reads, writes and evictions at once, for the race detector; every read
// ends on the last value written.
func TestTokenCacheConcurrent(t *testing.T) {
	rs := redistest.Start(t)
	c, _ := cachingClient(t, rs, 30*(cachedOverhead+10))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				cacheGet(t, c, fmt.Sprintf("k%d", (i*7+w)%50), time.Hour)
			}
		}()
	}
	for i := range 200 {
		rs.Do("SET", fmt.Sprintf("k%d", i%50), fmt.Sprint(i))
	}
	close(stop)
	wg.Wait()
	for i := 150; i < 200; i++ {
		key, want := fmt.Sprintf("k%d", i%50), fmt.Sprint(i)
		servicetest.Poll(t, time.Second, key+" = "+want, func() bool {
			v, _ := cacheGet(t, c, key, time.Hour)
			return v == want
		})
	}
}

// measureEnv, set, makes TestTokenCacheMemory measure rather than start
// a process of its own to measure in.
const measureEnv = "PESTO_MEASURE_TOKEN_CACHE"

// cachedOverhead is what an entry costs besides its key, command and
// value, within a quarter. The heap is measured in a test process that runs
// only this test: in the whole suite, other tests' clients and servers,
// still winding down, allocate and free beside it.
func TestTokenCacheMemory(t *testing.T) {
	if os.Getenv(measureEnv) == "" {
		cmd := servicetest.SelfCommand("-test.run=^TestTokenCacheMemory$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), measureEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("--- PASS: TestTokenCacheMemory")) {
			t.Fatalf("the measuring process: %v\n%s", err, out)
		}
		t.Logf("the measuring process:\n%s", out)
		return
	}
	// The record to cache comes from a standalone Redis, through a client
	// closed before the measurement, so no client works beside it.
	rs := redistest.StartStandalone(t)
	record := strings.Repeat("r", 200)
	rs.Do("SET", "k", record)
	// Small buffers: what the closed client frees, if it frees it during
	// the measurement, is then far below the error allowed (rueidis's
	// default 1 MiB of buffers is about the heap of the 10,000 entries).
	goroutines := runtime.NumGoroutine()
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{rs.Addr}, DisableCache: true,
		ReadBufferEachConn: 1 << 10, WriteBufferEachConn: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	reply, err := client.Do(context.Background(), client.B().Get().Key("k").Build()).ToMessage()
	if err != nil {
		t.Fatal(err)
	}
	client.Close()
	// Its goroutines gone, what they held is freed before the measurement,
	// not during it.
	servicetest.Poll(t, 5*time.Second, "the closed client's goroutines to end", func() bool {
		return runtime.NumGoroutine() <= goroutines
	})
	const n = 10000
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%064d", i)
	}
	now := time.Now()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c := newTokenCache(1 << 30)
	for _, key := range keys {
		c.Flight(key, "GET", time.Hour, now)
		c.Update(key, "GET", reply) // the record's bytes are shared: counted below
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perEntry := int(after.HeapAlloc-before.HeapAlloc) / n
	runtime.KeepAlive(c)
	if perEntry < cachedOverhead*3/4 || perEntry > cachedOverhead*5/4 {
		t.Errorf("an entry costs %d bytes besides its key and value; cachedOverhead says %d", perEntry, cachedOverhead)
	}
	t.Logf("%d bytes an entry besides its key and value; with a 64-byte key and a %d-byte record, %d", perEntry, len(record), perEntry+64+len(record))
	if c.size != n*(cachedOverhead+64+3+len(record)) {
		t.Errorf("estimated size %d", c.size)
	}
}

func isEmpty(v rueidis.RedisMessage) bool { return v == rueidis.RedisMessage{} }

func mustString(t *testing.T, v rueidis.RedisMessage) string {
	t.Helper()
	s, err := v.ToString()
	if err != nil {
		t.Fatalf("%v: %v", v, err)
	}
	return s
}

// BenchmarkCacheHit is a read served from the client-side cache, through
// the client, with rueidis's own cache and with tokenCache, 10,000 keys
// cached.
//
//	go test -run '^$' -bench CacheHit -benchmem ./auth
func BenchmarkCacheHit(b *testing.B) {
	rs := redistest.Start(b)
	keys := make([]string, 10000)
	for i := range keys {
		keys[i] = fmt.Sprintf("%064d", i)
		rs.Do("SET", keys[i], strings.Repeat("r", 150))
	}
	for _, store := range []struct {
		name string
		fn   rueidis.NewCacheStoreFn
	}{
		{"rueidis", nil},
		{"tokenCache", func(o rueidis.CacheStoreOption) rueidis.CacheStore { return newTokenCache(o.CacheSizeEachConn) }},
	} {
		b.Run(store.name, func(b *testing.B) {
			opt, err := rueidis.ParseURL(rs.URL)
			if err != nil {
				b.Fatal(err)
			}
			opt.CacheSizeEachConn, opt.NewCacheStoreFn = 32<<20, store.fn
			c, err := rueidis.NewClient(opt)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			for _, k := range keys {
				c.DoCache(ctx, c.B().Get().Key(k).Cache(), time.Hour)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if res := c.DoCache(ctx, c.B().Get().Key(keys[i%len(keys)]).Cache(), time.Hour); !res.IsCacheHit() {
					b.Fatal("miss")
				}
				i++
			}
		})
	}
}
