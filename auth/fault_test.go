package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pesto/shared/metrics"
	"pesto/shared/redistest"
	"pesto/shared/server"
	"pesto/shared/servicetest"
)

// result is one call seen by a load generator.
type result struct {
	at      time.Time
	elapsed time.Duration
	answer  answer
	err     error
}

// load calls url with token from workers goroutines until stop is closed.
func load(url, token string, workers int, stop <-chan struct{}) <-chan []result {
	out := make(chan []result, 1)
	go func() {
		var mu sync.Mutex
		var all []result
		var wg sync.WaitGroup
		client := &http.Client{Timeout: 5 * time.Second}
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					req, _ := http.NewRequest("GET", url, nil)
					req.Header.Set(headerToken, token)
					start := time.Now()
					res, err := client.Do(req)
					r := result{at: start, err: err}
					if err == nil {
						body, _ := io.ReadAll(res.Body)
						res.Body.Close()
						r.answer = answer{res.StatusCode, string(body), res.Header}
					}
					r.elapsed = time.Since(start)
					mu.Lock()
					all = append(all, r)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		out <- all
	}()
	return out
}

// Redis restarted under steady load: fast legacy 500s in the gap, back
// within 2 s, no panic, and the quota holds across the restart.
func TestRedisRestartUnderLoad(t *testing.T) {
	const limit = 400
	rs := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	rs.Do("SET", "tok-load", fmt.Sprintf(`{"UserEmail":"load@example.com","MonthlyLimit":%d,"Revoked":false}`, limit))
	a := startAuth(t, map[string]string{"REDIS_URL": rs.URL, "LOG_LEVEL": "warn"})
	stop := make(chan struct{})
	results := load(a.URL, "tok-load", 8, stop)

	servicetest.Poll(t, 5*time.Second, "some calls allowed", func() bool {
		return metricValue(t, a.URL, `pesto_auth_decisions_total{outcome="allowed"}`) >= 50
	})
	rs.Stop()
	down := time.Now()
	// Keep Redis away long enough for the load to see the outage.
	servicetest.Poll(t, 5*time.Second, "500s during the outage", func() bool {
		return metricValue(t, a.URL, `pesto_redis_errors_total`) >= 20
	})
	rs.Restart()
	up := time.Now()
	servicetest.Poll(t, 15*time.Second, "quota used up after the restart", func() bool {
		return metricValue(t, a.URL, `pesto_auth_decisions_total{outcome="over_quota"}`) >= 50
	})
	close(stop)
	all := <-results

	counts := map[int]int{}
	var firstOKAfterUp time.Time
	for _, r := range all {
		if r.err != nil {
			t.Fatalf("transport error (crash or hang?): %v", r.err)
		}
		counts[r.answer.Status]++
		switch r.answer.Status {
		case 200:
			if r.at.After(up) && firstOKAfterUp.IsZero() {
				firstOKAfterUp = r.at.Add(r.elapsed)
			}
		case 429:
		case 500:
			if r.answer.Body != `{"message":"Internal server error"}` || r.answer.Header.Get("Retry-After") != "1" {
				t.Fatalf("500 during the outage: %+v", r.answer)
			}
			if r.elapsed > time.Second {
				t.Fatalf("a 500 took %v", r.elapsed)
			}
		default:
			t.Fatalf("unexpected answer %+v", r.answer)
		}
	}
	if firstOKAfterUp.IsZero() || firstOKAfterUp.Sub(up) > 2*time.Second {
		t.Fatalf("first 200 %v after Redis was back, want within 2s", firstOKAfterUp.Sub(up))
	}
	used, _ := strconv.Atoi(rs.Do("GET", "counter/"+time.Now().UTC().Format("2006-01")+"/load@example.com"))
	if counts[200] > limit || used != limit {
		t.Fatalf("%d allowed, counter %d, limit %d", counts[200], used, limit)
	}
	t.Logf("%d calls: %v; outage %v; first 200 %v after Redis was back; counter %d",
		len(all), counts, up.Sub(down).Round(time.Millisecond), firstOKAfterUp.Sub(up).Round(time.Millisecond), used)
}

// A Sentinel failover during traffic: calls fail for a few seconds at most,
// then succeed against the new master, with no restart of auth.
func TestSentinelFailoverUnderTraffic(t *testing.T) {
	s := redistest.StartSentinel(t)
	s.Master.Do("SET", "tok-s", `{"UserEmail":"jane@example.com","MonthlyLimit":1000000,"Revoked":false}`)
	servicetest.Poll(t, 5*time.Second, "record replicated", func() bool { return s.Replica.Do("GET", "tok-s") != "" })
	a := startAuth(t, map[string]string{"REDIS_URL": s.URL, "LOG_LEVEL": "warn"})
	if got := call(t, "GET", a.URL, "tok-s"); got.Status != 200 {
		t.Fatalf("before failover: %+v", got)
	}
	stop := make(chan struct{})
	results := load(a.URL, "tok-s", 4, stop)
	s.Failover()
	servicetest.Poll(t, 20*time.Second, "replica promoted", func() bool { return s.MasterAddr() == s.Replica.Addr })
	promoted := time.Now()
	var okSince time.Time
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("auth logs:\n%s", lastLines(a.Logs.String(), 20))
		}
	})
	servicetest.Poll(t, 20*time.Second, "2 s of successes after the failover", func() bool {
		if call(t, "GET", a.URL, "tok-s").Status != 200 {
			okSince = time.Time{}
			return false
		}
		if okSince.IsZero() {
			okSince = time.Now()
		}
		return time.Since(okSince) > 2*time.Second
	})
	close(stop)
	all := <-results
	var failStart, failEnd time.Time
	counts := map[int]int{}
	for _, r := range all {
		if r.err != nil {
			t.Fatalf("transport error: %v", r.err)
		}
		counts[r.answer.Status]++
		if r.answer.Status != 200 {
			if r.answer.Status != 500 || r.answer.Body != `{"message":"Internal server error"}` {
				t.Fatalf("during failover: %+v", r.answer)
			}
			if failStart.IsZero() || r.at.Before(failStart) {
				failStart = r.at
			}
			if end := r.at.Add(r.elapsed); end.After(failEnd) {
				failEnd = end
			}
		}
	}
	window := failEnd.Sub(failStart)
	if window > 5*time.Second {
		t.Fatalf("calls failed for %v, want a few seconds at most", window)
	}
	used := s.Replica.Do("GET", "counter/"+time.Now().UTC().Format("2006-01")+"/jane@example.com")
	if used == "" {
		t.Fatal("no counter on the new master")
	}
	t.Logf("%d calls %v; failures over %v; ok %v after promotion; counter %s", len(all), counts,
		window.Round(time.Millisecond), okSince.Sub(promoted).Round(time.Millisecond), used)
}

// Slow and idle clients are cut off by the connection timeouts, and cannot
// keep others from being served.
func TestSlowClients(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok", validRecord)
	cfg, err := loadConfig(servicetest.Env(map[string]string{"REDIS_URL": rs.URL, "KEY_RATE": "off"}))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ReadTimeout, cfg.WriteTimeout, cfg.IdleTimeout = time.Second, time.Second, time.Second
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	store := dialStore(t, cfg, log)
	app := newApp(log, cfg, store, store, metrics.NewRegistry(), nil, timeNow)
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- server.Serve(ctx, app, "127.0.0.1:0", time.Second, log, func(a net.Addr) { addrc <- a })
	}()
	addr := (<-addrc).String()
	t.Cleanup(func() { cancel(); <-done })

	const slow = 200
	var closed, closedIdle atomic.Int32
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < slow; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer c.Close()
			if i%2 == 0 { // idle: sends nothing, and sees the server hang up
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadAll(c); err == nil {
					closed.Add(1)
					closedIdle.Add(1)
				}
				return
			}
			// slowloris: a request head one byte at a time, never finished
			head := "GET / HTTP/1.1\r\nHost: x\r\nX-Pesto-Token: tok\r\nX-Slow: " + strings.Repeat("a", 1000)
			for j := 0; j < len(head); j++ {
				if _, err := c.Write([]byte{head[j]}); err != nil {
					closed.Add(1)
					return
				}
				time.Sleep(50 * time.Millisecond) // the client's pace, not synchronisation
				if time.Since(start) > 10*time.Second {
					return
				}
			}
		}(i)
	}
	// Meanwhile a normal client is served promptly.
	for i := 0; i < 20; i++ {
		t0 := time.Now()
		if got := call(t, "GET", "http://"+addr, "tok"); got.Status != 200 || time.Since(t0) > 500*time.Millisecond {
			t.Fatalf("normal call %d during the attack: %+v after %v", i, got, time.Since(t0))
		}
	}
	wg.Wait()
	if n := closed.Load(); n != slow {
		t.Fatalf("%d of %d slow connections cut off (%d idle ones)", n, slow, closedIdle.Load())
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Fatalf("slow connections held for %v with 1s timeouts", elapsed)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// A Redis that hangs (frozen, its connections open): metered calls get 500
// within a second; an unmetered key served from the cache is refused too
// once the connection is given up, never let through for long.
func TestFrozenRedis(t *testing.T) {
	rs := redistest.Start(t)
	rs.Do("SET", "tok-metered", validRecord)
	rs.Do("SET", "tok-trial", `{"UserEmail":"trial-x@pesto.teknologiumum.com","MonthlyLimit":10,"Revoked":false}`)
	a := startAuth(t, map[string]string{"REDIS_URL": rs.URL, "LOG_LEVEL": "error"})
	for _, tok := range []string{"tok-metered", "tok-trial"} {
		if got := call(t, "GET", a.URL, tok); got.Status != 200 {
			t.Fatalf("%s before: %+v", tok, got)
		}
	}
	rs.Freeze()
	frozen := time.Now()
	start := time.Now()
	if got := call(t, "GET", a.URL, "tok-metered"); got.Status != 500 || got.Header.Get("Retry-After") != "1" || time.Since(start) > time.Second {
		t.Fatalf("metered with redis frozen: %+v after %v", got, time.Since(start))
	}
	servicetest.Poll(t, 6*time.Second, "unmetered key refused with redis frozen", func() bool {
		got := call(t, "GET", a.URL, "tok-trial")
		return got.Status == 500 && got.Body == `{"message":"Internal server error"}`
	})
	t.Logf("unmetered key refused %v after the freeze", time.Since(frozen).Round(time.Millisecond))
	rs.Thaw()
	servicetest.Poll(t, 5*time.Second, "allowed again after thaw", func() bool {
		return call(t, "GET", a.URL, "tok-metered").Status == 200 && call(t, "GET", a.URL, "tok-trial").Status == 200
	})
}

// Redis stalls (SIGSTOP) under load through two replicas, then resumes: the
// scripts queued meanwhile run after their deadlines and count nothing, so
// the counter is exactly the number of calls answered 200, never above the
// limit, and every other call was answered 500 within a second or 429.
func TestStalledRedisCountsOnlyThe200s(t *testing.T) {
	const limit = 600
	rs := redistest.Start(t)
	rs.Do("SET", "tok-stall", fmt.Sprintf(`{"UserEmail":"stall@example.com","MonthlyLimit":%d,"Revoked":false}`, limit))
	env := map[string]string{"REDIS_URL": rs.URL, "LOG_LEVEL": "error"}
	replicas := []*authInstance{startAuth(t, env), startAuth(t, env)}
	metric := func(series string) (n int) {
		for _, a := range replicas {
			n += metricValue(t, a.URL, series)
		}
		return n
	}
	stop := make(chan struct{})
	var results []<-chan []result
	for _, a := range replicas {
		results = append(results, load(a.URL, "tok-stall", 16, stop))
	}
	servicetest.Poll(t, 10*time.Second, "some calls allowed", func() bool {
		return metric(`pesto_auth_decisions_total{outcome="allowed"}`) >= 100
	})
	rs.Freeze()
	frozen := time.Now()
	// Stalled long enough for calls on both replicas to give up while
	// their counts wait in Redis's sockets, and for longer than any
	// timeout of auth's own (the connection of the records is given up
	// after connTimeout; the counting one must not be).
	servicetest.Poll(t, 10*time.Second, "500s on both replicas during a 3 s stall", func() bool {
		if time.Since(frozen) < 3*time.Second {
			return false
		}
		for _, a := range replicas {
			if metricValue(t, a.URL, `pesto_redis_errors_total`) < 32 {
				return false
			}
		}
		return true
	})
	rs.Thaw()
	servicetest.Poll(t, 20*time.Second, "quota used up after the stall", func() bool {
		return metric(`pesto_auth_decisions_total{outcome="over_quota"}`) >= 100
	})
	close(stop)

	counts := map[int]int{}
	for _, rc := range results {
		for _, r := range <-rc {
			if r.err != nil {
				t.Fatalf("transport error: %v", r.err)
			}
			counts[r.answer.Status]++
			switch r.answer.Status {
			case 200, 429:
			case 500:
				if r.answer.Body != `{"message":"Internal server error"}` || r.elapsed > time.Second {
					t.Fatalf("500 after %v: %+v", r.elapsed, r.answer)
				}
			default:
				t.Fatalf("unexpected answer %+v", r.answer)
			}
		}
	}
	used, _ := strconv.Atoi(rs.Do("GET", "counter/"+time.Now().UTC().Format("2006-01")+"/stall@example.com"))
	t.Logf("answers %v, counter %d, limit %d", counts, used, limit)
	if used != counts[200] || used != limit {
		t.Fatalf("counter %d, %d answered 200, limit %d: want all three equal", used, counts[200], limit)
	}
}
