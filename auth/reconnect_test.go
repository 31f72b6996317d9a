package main

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"pesto/shared/redistest"
	"pesto/shared/wire"
)

// A Redis that closed auth's connections (a restart, CLIENT KILL, a
// Cluster failover) costs no call once it answers again: the first burst
// after it, through two replicas, gets no 500, and the counter equals the
// calls answered 200. (A connection that Redis closed is known to be
// closed before a call uses it: the client reads every connection in the
// background, AlwaysPipelining.)
func TestNoErrorOnceRedisIsBack(t *testing.T) {
	for _, tc := range []struct {
		name string
		// disrupt closes every connection auth has to rs and returns once
		// rs answers again.
		disrupt func(t *testing.T, rs *redistest.Server)
	}{
		{"restart", func(t *testing.T, rs *redistest.Server) {
			rs.Stop()
			rs.Restart()
		}},
		{"CLIENT KILL", func(t *testing.T, rs *redistest.Server) {
			rs.KillClients()
		}},
		{"failover", func(t *testing.T, rs *redistest.Server) {
			rs.Failover()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const limit, calls = 300, 600
			var rs *redistest.Server
			if tc.name == "failover" {
				// A Cluster's, whatever PESTO_REDIS (a Sentinel's failover
				// is TestSentinelFailoverUnderTraffic's).
				rs = redistest.StartClusterWithReplica(t)
			} else {
				rs = redistest.Start(t)
			}
			env := map[string]string{"REDIS_URL": rs.URL, "LOG_LEVEL": "warn"}
			replicas := []*authInstance{startAuth(t, env), startAuth(t, env)}
			// Each replica has served calls: its connections are open.
			rs.Do("SET", "tok-warm", `{"UserEmail":"warm@example.com","MonthlyLimit":1000,"Revoked":false}`)
			for _, a := range replicas {
				for range 3 {
					if got := call(t, "GET", a.URL, "tok-warm"); got.Status != 200 {
						t.Fatalf("before: %+v", got)
					}
				}
			}

			tc.disrupt(t, rs)
			rs.Do("SET", "tok-burst", fmt.Sprintf(`{"UserEmail":"burst@example.com","MonthlyLimit":%d,"Revoked":false}`, limit))

			counts := burst(t, replicas, "tok-burst", calls)
			used, _ := strconv.Atoi(rs.Do("GET", wire.CounterKey(time.Now(), "burst@example.com")))
			t.Logf("%d calls after the %s: %v; counter %d", calls, tc.name, counts, used)
			if counts[500] != 0 || counts[200] != limit || counts[429] != calls-limit || used != limit {
				t.Errorf("%v, counter %d: want %d × 200, %d × 429, no 500, counter %d", counts, used, limit, calls-limit, limit)
			}
		})
	}
}

// burst makes n calls of token from 64 workers at once, spread over the
// replicas, and counts the answers by status (0: no answer).
func burst(t *testing.T, replicas []*authInstance, token string, n int) map[int]int {
	t.Helper()
	const workers = 64
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	var mu sync.Mutex
	counts := map[int]int{}
	jobs := make(chan int, n)
	for i := range n {
		jobs <- i
	}
	close(jobs)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				req, _ := http.NewRequest("GET", replicas[i%len(replicas)].URL, nil)
				req.Header.Set(headerToken, token)
				status := 0
				if res, err := client.Do(req); err == nil {
					res.Body.Close()
					status = res.StatusCode
				}
				mu.Lock()
				counts[status]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return counts
}
