package main

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"pesto/registration/internal/smtptest"
	"pesto/shared/redistest"
)

// A Redis that closed registration's connections (a restart, CLIENT KILL,
// a Cluster failover) costs no request once it answers again: the first
// signup, trial, pending, approve and revoke after it are answered as
// usual, a burst of signups gets no 500, and the outbox worker sends the
// approved key's email. (auth's TestNoErrorOnceRedisIsBack is the same for
// the hook.)
func TestNoErrorOnceRedisIsBack(t *testing.T) {
	for _, tc := range []struct {
		name    string
		disrupt func(rs *redistest.Server)
	}{
		{"restart", func(rs *redistest.Server) { rs.Stop(); rs.Restart() }},
		{"CLIENT KILL", func(rs *redistest.Server) { rs.KillClients() }},
		{"failover", func(rs *redistest.Server) { rs.Failover() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rs *redistest.Server
			if tc.name == "failover" {
				rs = redistest.StartClusterWithReplica(t) // whatever PESTO_REDIS
			} else {
				rs = redistest.Start(t)
			}
			srv := smtptest.Start(t)
			base, logs := startRegistration(t, map[string]string{"REDIS_URL": rs.URL, "SMTP_URL": srv.URL("tls=none")})
			admin := []string{"Authorization", adminBearer(t, "alice")}
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("logs:\n%s", logs)
				}
			})
			signup := func(email string) response {
				return send(t, "POST", base+"/api/register", fmt.Sprintf(`{"name":"N","email":%q,"building":"","calls":1}`, email))
			}

			// Every route and the outbox worker have used their
			// connections.
			signup("warm@example.com").want(t, 201, `{"message":"Created"}`)
			if r := send(t, "POST", base+"/api/trial", ""); r.status != 200 {
				t.Fatalf("trial before: %d %s", r.status, r.body)
			}
			tokenOf(t, send(t, "PUT", base+"/api/approve", `{"email":"warm@example.com","limit":10}`, admin...))
			srv.WaitReceived(t, 1, 10*time.Second)

			tc.disrupt(rs)

			// The first request of each route.
			signup("first@example.com").want(t, 201, `{"message":"Created"}`)
			if r := send(t, "POST", base+"/api/trial", ""); r.status != 200 {
				t.Errorf("first trial after: %d %s", r.status, r.body)
			}
			if r := send(t, "GET", base+"/api/pending", "", admin...); r.status != 200 || !strings.Contains(r.body, "first@example.com") {
				t.Errorf("first pending after: %d %s", r.status, r.body)
			}
			token := tokenOf(t, send(t, "PUT", base+"/api/approve", `{"email":"first@example.com","limit":10}`, admin...))
			send(t, "PUT", base+"/api/revoke", fmt.Sprintf(`{"token":%q}`, token), admin...).want(t, 200, `{"message":"OK"}`)
			// The outbox worker, whose blocking read's connection was
			// closed too, sends the approved key.
			got := srv.WaitReceived(t, 2, 10*time.Second)
			if !strings.Contains(string(got[1].Data), token) {
				t.Errorf("the second email does not hold the approved key %s", token)
			}

			// A burst of signups at once.
			var mu sync.Mutex
			counts := map[int]int{}
			var wg sync.WaitGroup
			for i := range 100 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r, err := try("POST", base+"/api/register", fmt.Sprintf(`{"name":"N","email":"burst-%d@example.com","building":"","calls":1}`, i))
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						counts[0]++
						return
					}
					counts[r.status]++
				}()
			}
			wg.Wait()
			if counts[201] != 100 {
				t.Errorf("100 signups at once after the %s: %v, want 100 × 201", tc.name, counts)
			}
		})
	}
}
