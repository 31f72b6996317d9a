//go:build e2e

// Package e2e checks the compose stack on a real Docker engine, from
// outside, through the gateway: what a user of a Pesto SDK and an operator
// see, with exact statuses, bodies and headers. make e2e (run.sh) prepares
// the engine and the images, then runs this with PESTO_E2E_DIR (a clean
// copy of the repository) and PESTO_E2E_DOCKER (the docker client).
package e2e

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"pesto/shared/servicetest"
	"pesto/shared/wire"
)

// project is the stack's compose project: pesto-e2e, or PESTO_E2E_PROJECT
// (run.sh refuses to start while containers of it exist).
var project = cmp.Or(os.Getenv("PESTO_E2E_PROJECT"), "pesto-e2e")

// stack is the compose project under test.
type stack struct {
	t      *testing.T
	dir    string
	docker string
	// Host addresses: the gateway, registration's admin API, the mail
	// catcher's web API.
	gateway, admin, mail string
	// composeErr is the last failed mustCompose: its command, error and output.
	composeErr string
}

func TestStack(t *testing.T) {
	s := &stack{t: t, dir: mustEnv(t, "PESTO_E2E_DIR"), docker: mustEnv(t, "PESTO_E2E_DOCKER")}
	gwPort, adminPort, mailPort := freePort(t), freePort(t), freePort(t)
	s.gateway = "http://127.0.0.1:" + gwPort
	s.admin = "http://127.0.0.1:" + adminPort
	s.mail = "http://127.0.0.1:" + mailPort
	secret := make([]byte, 48)
	rand.Read(secret)
	env := strings.Join([]string{
		"COMPOSE_PROJECT_NAME=" + project,
		"COMPOSE_PROFILES=dev",
		"PESTO_VERSION=e2e",
		// The gateway on loopback only: nothing here is for the network.
		"PESTO_HTTP_PORT=127.0.0.1:" + gwPort,
		"REGISTRATION_ADMIN_PORT=" + adminPort,
		"MAILCATCHER_UI_PORT=" + mailPort,
		"SMTP_URL=smtp://mailcatcher:1025?tls=none",
		"ADMIN_JWT_SECRET=" + base64.StdEncoding.EncodeToString(secret),
	}, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(s.dir, ".env"), []byte(env), 0o600); err != nil {
		t.Fatal(err)
	}

	down := false
	t.Cleanup(func() {
		if t.Failed() {
			// The logs first, what went wrong last: a CI report that shows
			// only the end of the output still says why.
			out, _ := s.compose("logs", "--no-color", "--tail", "60")
			t.Logf("docker compose logs:\n%s", out)
			s.logHealth(t)
			out, _ = s.compose("ps", "-a")
			t.Logf("docker compose ps -a:\n%s", out)
			if s.composeErr != "" {
				t.Logf("the docker compose command that failed: %s", s.composeErr)
			}
		}
		if !down {
			if out, err := s.compose("down", "-v", "--remove-orphans"); err != nil {
				t.Errorf("docker compose down -v: %v\n%s", err, out)
			}
		}
	})

	start := time.Now()
	s.mustCompose("up", "-d", "--wait", "--wait-timeout", "180")
	t.Logf("docker compose up -d --wait: %v", time.Since(start).Round(time.Millisecond))

	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow() // each step builds on the ones before
		}
	}
	step("every container healthy", s.checkHealthy)
	step("the gateway's log without the ForwardAuth warning", s.checkGatewayLog)

	var trialKey string
	step("signup page", func(t *testing.T) {
		res := s.do(t, "GET", s.gateway+"/", nil, "")
		if res.status != 200 || !strings.Contains(res.body, `<form id="signup" action="/api/register" method="post"`) {
			t.Fatalf("GET /: %d %.200q, want 200 and the signup form", res.status, res.body)
		}
		wantHeader(t, res, "Content-Type", "text/html; charset=utf-8")
	})
	step("register", func(t *testing.T) {
		for _, email := range []string{jane.Email, joe.Email} {
			res := s.post(t, s.gateway+"/api/register", signupJSON(email))
			wantJSON(t, res, 201, `{"message":"Created"}`)
		}
		res := s.post(t, s.gateway+"/api/register", signupJSON(jane.Email))
		wantJSON(t, res, 202, `{"message":"Accepted"}`)
	})
	step("trial", func(t *testing.T) {
		res := s.do(t, "POST", s.gateway+"/api/trial", nil, "")
		m := regexp.MustCompile(`^\{"token":"(TRIAL-[A-Za-z0-9]{58})"\}$`).FindStringSubmatch(res.body)
		if res.status != 200 || m == nil {
			t.Fatalf("POST /api/trial: %d %q, want 200 {\"token\":\"TRIAL-…\"}", res.status, res.body)
		}
		trialKey = m[1]
		// Metered (compose sets UNMETERED_EMAILS empty): each call counts
		// against the trial's 10.
		for range 3 {
			s.wantAllowed(t, "POST", "/api/execute", trialKey)
		}
		var rec struct{ UserEmail string }
		if err := json.Unmarshal([]byte(s.redis(t, "GET", trialKey)), &rec); err != nil || !strings.HasPrefix(rec.UserEmail, "trial-") {
			t.Fatalf("trial record: %q (%v)", s.redis(t, "GET", trialKey), err)
		}
		if got := s.redis(t, "GET", counterKey(rec.UserEmail)); got != "3" {
			t.Errorf("%s = %q after the trial key's 3 calls, want 3", counterKey(rec.UserEmail), got)
		}
	})

	step("the Pesto SDK's calls through the gateway", s.checkSDK)

	var adminToken string
	keys := map[string]string{} // email -> key
	step("approve through the admin port", func(t *testing.T) {
		out := s.mustCompose("exec", "-T", "registration", "/registration", "admin-token", "--sub", "e2e", "--ttl", "15m")
		adminToken = strings.TrimSpace(out)
		res := s.do(t, "GET", s.admin+"/api/pending", nil, adminToken)
		var pending []signup
		if err := json.Unmarshal([]byte(res.body), &pending); res.status != 200 || err != nil ||
			!slices.Equal(pending, []signup{jane, joe}) {
			t.Fatalf("GET /api/pending: %d %q, want 200 with Jane's and Joe's signups", res.status, res.body)
		}
		for email, limit := range map[string]int{jane.Email: 3, joe.Email: 100} {
			res := s.do(t, "PUT", s.admin+"/api/approve", fmt.Appendf(nil, `{"email":%q,"limit":%d}`, email, limit), adminToken)
			m := regexp.MustCompile(`^\{"message":"OK","token":"([A-Za-z0-9]{64})"\}$`).FindStringSubmatch(res.body)
			if res.status != 200 || m == nil {
				t.Fatalf("PUT /api/approve %s: %d %q, want 200 {\"message\":\"OK\",\"token\":\"…\"}", email, res.status, res.body)
			}
			keys[email] = m[1]
			want := fmt.Sprintf(`{"UserEmail":%q,"MonthlyLimit":%d,"Revoked":false}`, email, limit)
			if got := s.redis(t, "GET", m[1]); got != want {
				t.Errorf("record of %s = %q, want %q", email, got, want)
			}
		}
	})
	step("the key emailed", func(t *testing.T) {
		for email, key := range keys {
			if got := s.emailedKey(t, email); got != key {
				t.Errorf("key emailed to %s = %q, want the approved %q", email, got, key)
			}
		}
	})
	step("the emailed key on every API path, its limit exact", func(t *testing.T) {
		key := keys[jane.Email]
		s.wantAllowed(t, "POST", "/api/execute", key)
		s.wantAllowed(t, "GET", "/api/list-runtimes", key)
		s.wantAllowed(t, "GET", "/api/ping", key)
		for _, path := range []string{"/api/ping", "/api/execute"} {
			res := s.do(t, "GET", s.gateway+path, nil, "", "X-Pesto-Token", key)
			wantDenied(t, res, 429, "Monthly limit exceeded")
			wantSecondsToNextMonth(t, res, "Retry-After")
			wantSecondsToNextMonth(t, res, "RateLimit-Reset")
			wantHeader(t, res, "RateLimit-Limit", "3")
			wantHeader(t, res, "RateLimit-Remaining", "0")
		}
		if got := s.redis(t, "GET", counterKey(jane.Email)); got != "3" {
			t.Errorf("%s = %q, want 3 (the allowed calls)", counterKey(jane.Email), got)
		}
	})
	step("quota warning emailed when the limit is reached", func(t *testing.T) {
		// Jane's 3 calls of 3: 80 % and 100 % fall on the 3rd call, which
		// sends the highest only.
		month := time.Now().UTC().Format("January 2006")
		text := s.emailText(t, jane.Email, "Your Pesto API calls for "+month+" are used up")
		if want := "have used all 3 calls of " + month + " (UTC)."; !strings.Contains(text, want) {
			t.Errorf("warning email lacks %q:\n%s", want, text)
		}
	})
	step("usage through the gateway, from auth itself", func(t *testing.T) {
		reset := wire.NextMonth(time.Now()).Format(time.RFC3339)
		for range 2 { // asking counts no call
			// The rate: compose's KEY_RATE, 10/s; Jane's three calls may
			// still be in its window.
			res := s.do(t, "GET", s.gateway+"/api/usage", nil, "", "X-Pesto-Token", keys[jane.Email])
			if want := regexp.MustCompile(`^\{"limit":3,"used":3,"remaining":0,"reset":"` + regexp.QuoteMeta(reset) +
				`","rate":\{"limit":10,"window":1,"remaining":(7,"reset":1|8,"reset":1|9,"reset":1|10,"reset":0)\}\}$`); res.status != 200 || !want.MatchString(res.body) {
				t.Errorf("got %d %q, want 200 matching %s", res.status, res.body, want)
			}
			wantHeader(t, res, "RateLimit-Limit", "3")
			wantHeader(t, res, "RateLimit-Remaining", "0")
			res = s.do(t, "GET", s.gateway+"/api/usage", nil, "", "X-Pesto-Token", keys[joe.Email])
			wantJSON(t, res, 200, `{"limit":100,"used":0,"remaining":100,"reset":"`+reset+`","rate":{"limit":10,"window":1,"remaining":10,"reset":0}}`)
		}
		wantDenied(t, s.do(t, "GET", s.gateway+"/api/usage", nil, "", "X-Pesto-Token", "no-such-key-0123456789"), 401, "Token not registered")
		if got := s.redis(t, "GET", counterKey(jane.Email)); got != "3" {
			t.Errorf("%s = %q after asking, want 3", counterKey(jane.Email), got)
		}
	})
	step("missing and unknown keys", func(t *testing.T) {
		wantDenied(t, s.do(t, "GET", s.gateway+"/api/ping", nil, ""), 401, "Token must be supplied")
		wantDenied(t, s.do(t, "GET", s.gateway+"/api/ping", nil, "", "X-Pesto-Token", ""), 401, "Token must be supplied")
		wantDenied(t, s.do(t, "GET", s.gateway+"/api/execute", nil, "", "X-Pesto-Token", "no-such-key-0123456789"), 401, "Token not registered")
	})
	step("revoke seen at once by both auth replicas", func(t *testing.T) {
		key := keys[jane.Email]
		replicas := s.authReplicas(t)
		// Each replica has the record in its client-side cache (60 s)...
		for _, r := range replicas {
			wantDenied(t, s.do(t, "GET", r, nil, "", "X-Pesto-Token", key), 429, "Monthly limit exceeded")
		}
		res := s.do(t, "PUT", s.admin+"/api/revoke", fmt.Appendf(nil, `{"token":%q}`, key), adminToken)
		wantJSON(t, res, 200, `{"message":"OK"}`)
		revoked := time.Now()
		// ...and Redis's invalidation reaches both at once: within a second,
		// not after the cache's 60 s.
		for _, base := range append(replicas, s.gateway+"/api/ping") {
			var res answer
			servicetest.Poll(t, time.Second, "revoked at "+base, func() bool {
				res = s.do(t, "GET", base, nil, "", "X-Pesto-Token", key)
				return res.status == 401
			})
			wantDenied(t, res, 401, "Token has been revoked")
		}
		t.Logf("revoked on %d replicas and the gateway within %v", len(replicas), time.Since(revoked).Round(time.Millisecond))
	})
	step("admin routes, /healthz and /metrics not routed", func(t *testing.T) {
		for _, r := range []struct{ method, path string }{
			{"GET", "/api/pending"}, {"PUT", "/api/approve"}, {"PUT", "/api/revoke"}, {"PUT", "/api/reject"}, {"PUT", "/api/rotate"},
			{"GET", "/healthz"}, {"GET", "/metrics"},
		} {
			res := s.do(t, r.method, s.gateway+r.path, []byte(`{}`), adminToken, "X-Pesto-Token", keys[joe.Email])
			if res.status != 404 || res.body != "404 page not found\n" {
				t.Errorf("%s %s: %d %q, want Traefik's 404", r.method, r.path, res.status, res.body)
			}
		}
	})
	step("Redis stopped and restarted", func(t *testing.T) {
		key := keys[joe.Email]
		s.wantAllowed(t, "GET", "/api/ping", key)
		s.mustCompose("stop", "redis")
		var res answer
		servicetest.Poll(t, 10*time.Second, "auth's answer with Redis stopped", func() bool {
			res = s.do(t, "GET", s.gateway+"/api/execute", nil, "", "X-Pesto-Token", key)
			return res.status != 200
		})
		wantDenied(t, res, 500, "Internal server error")
		wantHeader(t, res, "Retry-After", "1")

		s.mustCompose("up", "-d", "--wait", "--wait-timeout", "120")
		servicetest.Poll(t, 30*time.Second, "auth's answer with Redis back", func() bool {
			res = s.do(t, "GET", s.gateway+"/api/execute", nil, "", "X-Pesto-Token", key)
			return res.status != 500
		})
		s.wantAllowed(t, "GET", "/api/list-runtimes", key)
		// Kept (AOF): the records, the counters (Joe: one call before the
		// stop, two since), the revocation, the trial key.
		if got, want := s.redis(t, "GET", counterKey(joe.Email)), "3"; got != want {
			t.Errorf("%s = %q, want %q", counterKey(joe.Email), got, want)
		}
		if got, want := s.redis(t, "GET", counterKey(jane.Email)), "3"; got != want {
			t.Errorf("%s = %q, want %q", counterKey(jane.Email), got, want)
		}
		if got, want := s.redis(t, "GET", key), fmt.Sprintf(`{"UserEmail":%q,"MonthlyLimit":100,"Revoked":false}`, joe.Email); got != want {
			t.Errorf("record of %s = %q, want %q", joe.Email, got, want)
		}
		wantDenied(t, s.do(t, "GET", s.gateway+"/api/ping", nil, "", "X-Pesto-Token", keys[jane.Email]), 401, "Token has been revoked")
		s.wantAllowed(t, "GET", "/api/ping", trialKey)
	})
	step("a burst right after Redis restarts", func(t *testing.T) {
		// Both replicas have used their connections to Redis; the restart
		// closes them. Once Redis answers again, no call is answered 500
		// (issue "A Redis restart costs no call"). 30 calls: within the
		// gateway's admission of one client (32 at once). The key is held to
		// no rate (compose's KEY_RATE would let 10 a second through): its
		// month alone decides.
		const key, email, limit, calls = "e2e-restart-key-0123456789", "restart-e2e@example.com", 20, 30
		s.redis(t, "SET", key, fmt.Sprintf(`{"UserEmail":%q,"MonthlyLimit":%d,"Revoked":false,"Rate":"off"}`, email, limit))
		for range 4 {
			s.wantAllowed(t, "GET", "/api/ping", key)
		}
		s.mustCompose("restart", "redis")
		servicetest.Poll(t, 30*time.Second, "Redis answering after its restart", func() bool {
			out, err := s.compose("exec", "-T", "redis", "redis-cli", "PING")
			return err == nil && strings.TrimSpace(out) == "PONG"
		})
		statuses := make([]int, calls)
		var wg sync.WaitGroup
		for i := range calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				statuses[i] = s.do(t, "GET", s.gateway+"/api/ping", nil, "", "X-Pesto-Token", key).status
			}()
		}
		wg.Wait()
		counts := map[int]int{}
		for _, st := range statuses {
			counts[st]++
		}
		t.Logf("%d calls at once right after the restart: %v", calls, counts)
		if counts[200] != limit-4 || counts[429] != calls-(limit-4) {
			t.Errorf("got %v, want %d × 200 and %d × 429, no 500", counts, limit-4, calls-(limit-4))
		}
		if got := s.redis(t, "GET", counterKey(email)); got != strconv.Itoa(limit) {
			t.Errorf("%s = %q, want %d", counterKey(email), got, limit)
		}
	})
	step("one client's floods", func(t *testing.T) {
		s.redis(t, "SET", probeKey, `{"UserEmail":"probe-e2e@example.com","MonthlyLimit":1000000,"Revoked":false}`)
		s.wantAllowed(t, "GET", "/api/ping", probeKey)
		for _, f := range floods {
			t.Run(f.name, func(t *testing.T) { s.runFlood(t, f) })
		}
	})
	step("a stuck gateway is restarted", s.checkLiveness)
	step("every container healthy, memory under its limit", func(t *testing.T) {
		s.checkHealthy(t)
		s.checkMemory(t)
	})
	step("docker compose down -v leaves nothing", func(t *testing.T) {
		s.mustCompose("down", "-v")
		down = true
		for _, what := range [][]string{
			{"ps", "-a", "-q"}, {"network", "ls", "-q"}, {"volume", "ls", "-q"},
		} {
			args := append(what, "--filter", "label=com.docker.compose.project="+project)
			out, err := exec.Command(s.docker, args...).CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "" {
				t.Errorf("docker %s after down: %q %v, want nothing", strings.Join(args, " "), out, err)
			}
		}
	})
}

// signup is an element of the waiting list as GET /api/pending lists it.
type signup struct {
	Name     string `json:"name"`
	Email    string `json:"email"`
	Building string `json:"building"`
	Calls    int    `json:"calls"`
}

var (
	jane = signup{Name: "Jane", Email: "jane-e2e@example.com", Building: "an end-to-end test", Calls: 1000}
	joe  = signup{Name: "Joe", Email: "joe-e2e@example.com", Building: "an end-to-end test", Calls: 1000}
)

func signupJSON(email string) []byte {
	s := jane
	if email == joe.Email {
		s = joe
	}
	b, _ := json.Marshal(s)
	return b
}

func counterKey(email string) string {
	return "counter/" + time.Now().UTC().Format("2006-01") + "/" + email
}

// compose runs docker compose in the copy of the repository.
func (s *stack) compose(args ...string) (string, error) {
	cmd := exec.Command(s.docker, append([]string{"compose"}, args...)...)
	cmd.Dir = s.dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

func (s *stack) mustCompose(args ...string) string {
	s.t.Helper()
	out, err := s.compose(args...)
	if err != nil {
		s.composeErr = fmt.Sprintf("docker compose %s: %v\n%s", strings.Join(args, " "), err, out)
		s.t.Fatal(s.composeErr)
	}
	return out
}

// logHealth logs each container's state and its last healthcheck probes.
func (s *stack) logHealth(t *testing.T) {
	ids := strings.Fields(func() string { out, _ := s.compose("ps", "-a", "-q"); return out }())
	for _, id := range ids {
		out, err := exec.Command(s.docker, "inspect", "--format",
			`{{.Name}} {{.State.Status}} exit={{.State.ExitCode}} oom={{.State.OOMKilled}} started={{.State.StartedAt}}{{if .State.Health}} health={{.State.Health.Status}}{{range .State.Health.Log}}
    probe {{.Start}} exit={{.ExitCode}}: {{.Output}}{{end}}{{end}}`, id).CombinedOutput()
		if err != nil {
			t.Logf("docker inspect %s: %v %s", id, err, out)
			continue
		}
		t.Logf("%s", strings.TrimSpace(string(out)))
	}
}

// redis runs redis-cli in the Redis container and returns its output
// without the final newline.
func (s *stack) redis(t *testing.T, args ...string) string {
	t.Helper()
	out, err := s.compose(append([]string{"exec", "-T", "redis", "redis-cli", "--no-raw"}, args...)...)
	if err != nil {
		t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
	}
	out = strings.TrimSuffix(out, "\n")
	// --no-raw quotes strings and shows a missing key as (nil).
	if out == "(nil)" || out == "" {
		return ""
	}
	if v, err := strconv.Unquote(out); err == nil {
		return v
	}
	return out
}

type container struct {
	Name, Service, State, Health string
}

func (s *stack) containers(t *testing.T) []container {
	t.Helper()
	out := s.mustCompose("ps", "-a", "--format", "json")
	var cs []container
	// One JSON object a line (Compose 2.21 and later), or one array.
	if err := json.Unmarshal([]byte(out), &cs); err != nil {
		cs = nil
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var c container
			if err := json.Unmarshal([]byte(line), &c); err != nil {
				t.Fatalf("docker compose ps: %v\n%s", err, out)
			}
			cs = append(cs, c)
		}
	}
	return cs
}

// checkHealthy wants every service's containers running, and healthy where
// the service has a healthcheck.
func (s *stack) checkHealthy(t *testing.T) {
	want := map[string]struct {
		count  int
		health string
	}{
		"redis": {1, "healthy"}, "auth": {2, "healthy"}, "registration": {1, "healthy"},
		"gateway": {1, "healthy"}, "api": {1, "healthy"}, "mailcatcher": {1, "healthy"},
	}
	got := map[string]int{}
	for _, c := range s.containers(t) {
		got[c.Service]++
		w, ok := want[c.Service]
		if !ok {
			t.Errorf("unexpected container %s", c.Name)
			continue
		}
		if c.State != "running" || c.Health != w.health {
			t.Errorf("%s: %s %q, want running %q", c.Name, c.State, c.Health, w.health)
		}
	}
	for svc, w := range want {
		if got[svc] != w.count {
			t.Errorf("%d containers of %s, want %d", got[svc], svc, w.count)
		}
	}
}

// checkMemory wants each container under the memory limit compose.yaml sets.
func (s *stack) checkMemory(t *testing.T) {
	limits := map[string]float64{"redis": 256, "auth": 32, "registration": 32, "gateway": 320, "api": 16, "mailcatcher": 64}
	var names []string
	service := map[string]string{}
	for _, c := range s.containers(t) {
		names = append(names, c.Name)
		service[c.Name] = c.Service
	}
	out, err := exec.Command(s.docker, append([]string{"stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}"}, names...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker stats: %v\n%s", err, out)
	}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		name, usage, _ := strings.Cut(line, "\t")
		used, limit, ok := strings.Cut(usage, " / ")
		u, err1 := mebibytes(used)
		l, err2 := mebibytes(limit)
		if !ok || err1 != nil || err2 != nil {
			t.Errorf("docker stats: cannot read %q", line)
			continue
		}
		seen++
		if want := limits[service[name]]; l != want {
			t.Errorf("%s: limit %.0f MiB, want %.0f MiB (compose.yaml)", name, l, want)
		}
		if u >= l {
			t.Errorf("%s: %.1f MiB used, at its limit %.0f MiB", name, u, l)
		}
		t.Logf("%s: %.1f MiB of %.0f MiB", name, u, l)
	}
	if seen != len(names) {
		t.Errorf("docker stats listed %d containers, want %d", seen, len(names))
	}
}

func mebibytes(v string) (float64, error) {
	v = strings.TrimSpace(v)
	for _, u := range []struct {
		suffix string
		scale  float64
	}{{"GiB", 1024}, {"MiB", 1}, {"KiB", 1.0 / 1024}, {"B", 1.0 / (1 << 20)}} {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			f, err := strconv.ParseFloat(n, 64)
			return f * u.scale, err
		}
	}
	return 0, fmt.Errorf("unit of %q", v)
}

// authReplicas returns the base URL of each auth container on the frontend
// network (a bridge network of this stack).
func (s *stack) authReplicas(t *testing.T) []string {
	t.Helper()
	var urls []string
	for _, id := range strings.Fields(s.mustCompose("ps", "-q", "auth")) {
		out, err := exec.Command(s.docker, "inspect", "--format",
			`{{(index .NetworkSettings.Networks "`+project+`_frontend").IPAddress}}`, id).CombinedOutput()
		ip := net.ParseIP(strings.TrimSpace(string(out)))
		if err != nil || ip == nil {
			t.Fatalf("address of auth container %s: %v %q", id, err, out)
		}
		urls = append(urls, "http://"+net.JoinHostPort(ip.String(), "3000")+"/")
	}
	if len(urls) != 2 {
		t.Fatalf("%d auth containers, want 2", len(urls))
	}
	return urls
}

// emailedKey waits for the key email to address at the mail catcher and
// returns the key its text part gives.
func (s *stack) emailedKey(t *testing.T, address string) string {
	t.Helper()
	text := s.emailText(t, address, "Your Pesto API key")
	m := regexp.MustCompile(`(?m)^ *X-Pesto-Token: (\S+)\r?$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("the email to %s gives no key:\n%s", address, text)
	}
	return m[1]
}

// emailText waits for the email to address with subject in the mail
// catcher and returns its text part.
func (s *stack) emailText(t *testing.T, address, subject string) string {
	t.Helper()
	var id string
	servicetest.Poll(t, 30*time.Second, "the email to "+address+": "+subject, func() bool {
		res := s.do(t, "GET", s.mail+"/api/v1/messages", nil, "")
		var list struct {
			Messages []struct {
				ID      string
				Subject string
				To      []struct{ Address string }
			}
		}
		if res.status != 200 || json.Unmarshal([]byte(res.body), &list) != nil {
			return false
		}
		for _, m := range list.Messages {
			if len(m.To) == 1 && m.To[0].Address == address && m.Subject == subject {
				id = m.ID
				return true
			}
		}
		return false
	})
	raw := s.do(t, "GET", s.mail+"/api/v1/message/"+id+"/raw", nil, "")
	return textPart(t, raw.body)
}

// textPart returns the decoded text/plain part of a MIME message.
func textPart(t *testing.T, raw string) string {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(raw))
	if err != nil {
		t.Fatalf("email: %v", err)
	}
	var walk func(h map[string][]string, body io.Reader) string
	walk = func(h map[string][]string, body io.Reader) string {
		mt, params, _ := mime.ParseMediaType(first(h["Content-Type"]))
		if strings.HasPrefix(mt, "multipart/") {
			mr := multipart.NewReader(body, params["boundary"])
			for {
				p, err := mr.NextRawPart()
				if err != nil {
					return ""
				}
				if s := walk(p.Header, p); s != "" {
					return s
				}
			}
		}
		if mt != "text/plain" {
			return ""
		}
		if strings.EqualFold(first(h["Content-Transfer-Encoding"]), "quoted-printable") {
			body = quotedprintable.NewReader(body)
		} else if strings.EqualFold(first(h["Content-Transfer-Encoding"]), "base64") {
			body = base64.NewDecoder(base64.StdEncoding, body)
		}
		b, _ := io.ReadAll(body)
		return string(b)
	}
	text := walk(msg.Header, msg.Body)
	if text == "" {
		t.Fatalf("the email has no text/plain part:\n%s", raw)
	}
	return text
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// answer is what a client got.
type answer struct {
	status int
	body   string
	header http.Header
}

var client = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// do sends a request; bearer, when set, is an admin token; extra are header
// name, value pairs.
func (s *stack) do(t *testing.T, method, url string, body []byte, bearer string, extra ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		req.Header[extra[i]] = []string{extra[i+1]}
	}
	status, b, header := servicetest.Do(t, client, req)
	return answer{status: status, body: b, header: header}
}

func (s *stack) post(t *testing.T, url string, body []byte) answer {
	t.Helper()
	return s.do(t, "POST", url, body, "")
}

// wantAllowed wants the call let through to the API: the demo API's 200
// answer to GET /api/ping, GET /api/list-runtimes, or POST /api/execute of
// some code (see checkSDK).
func (s *stack) wantAllowed(t *testing.T, method, path, key string) {
	t.Helper()
	var body []byte
	want := map[string]string{
		"GET /api/ping":          `{"message":"OK"}`,
		"GET /api/list-runtimes": `{"runtime":[{"language":"Demo","version":"1.0.0","aliases":["demo"],"compiled":false}]}`,
		"POST /api/execute": `{"language":"Demo","version":"1.0.0","compile":{"stdout":"","stderr":"","output":"","exitCode":0},` +
			`"runtime":{"stdout":"allowed","stderr":"","output":"allowed","exitCode":0}}`,
	}[method+" "+path]
	if want == "" {
		t.Fatalf("wantAllowed %s %s: the demo API answers 200 to GET /api/ping, GET /api/list-runtimes and POST /api/execute only", method, path)
	}
	if path == "/api/execute" {
		body = []byte(`{"language":"Demo","version":"latest","code":"allowed"}`)
	}
	res := s.do(t, method, s.gateway+path, body, "", "X-Pesto-Token", key)
	if res.status != 200 || res.body != want {
		t.Errorf("%s %s: %d %q, want 200 %q from the API", method, path, res.status, res.body, want)
	}
}

func wantJSON(t *testing.T, got answer, status int, body string) {
	t.Helper()
	if got.status != status || got.body != body {
		t.Errorf("got %d %q, want %d %q", got.status, got.body, status, body)
	}
	wantHeader(t, got, "Content-Type", "application/json")
}

// wantDenied wants auth's answer of SPEC §2 as the SDKs match it.
func wantDenied(t *testing.T, got answer, status int, message string) {
	t.Helper()
	wantJSON(t, got, status, `{"message":"`+message+`"}`)
	wantHeader(t, got, "X-Pesto-Error", message)
}

func wantHeader(t *testing.T, got answer, name, want string) {
	t.Helper()
	if v := got.header.Get(name); v != want {
		t.Errorf("%s = %q, want %q", name, v, want)
	}
}

// wantSecondsToNextMonth wants header name to count the seconds to the next
// UTC month, give or take the test's own time.
func wantSecondsToNextMonth(t *testing.T, got answer, name string) {
	t.Helper()
	v, err := strconv.ParseInt(got.header.Get(name), 10, 64)
	now := time.Now()
	want := int64(wire.NextMonth(now).Sub(now) / time.Second)
	if err != nil || v < want-10 || v > want+1 {
		t.Errorf("%s = %q, want about %d (seconds to the next UTC month)", name, got.header.Get(name), want)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

func mustEnv(t *testing.T, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: run make e2e (deploy/e2e/run.sh)", name)
	}
	return v
}

// The Pesto Go SDK's request and response shapes, as it sends and reads
// them (its codeRequestSimplified, CodeResponse, Output, RuntimeResponse,
// Runtime, PingResponse and errorResponse).
type (
	sdkCodeRequest struct {
		Language       string `json:"language"`
		Version        string `json:"version"`
		Code           string `json:"code"`
		CompileTimeout int32  `json:"compileTimeout,omitempty"`
		RunTimeout     int32  `json:"runTimeout,omitempty"`
		MemoryLimit    int32  `json:"memoryLimit,omitempty"`
	}
	sdkOutput struct {
		Stdout   string `json:"stdout"`
		Stderr   string `json:"stderr"`
		Output   string `json:"output"`
		ExitCode int    `json:"exitCode"`
	}
	sdkCodeResponse struct {
		Language string    `json:"language"`
		Version  string    `json:"version"`
		Compile  sdkOutput `json:"compile"`
		Runtime  sdkOutput `json:"runtime"`
	}
	sdkRuntime struct {
		Language string   `json:"language"`
		Version  string   `json:"version"`
		Aliases  []string `json:"aliases"`
		Compiled bool     `json:"compiled"`
	}
	sdkRuntimeResponse struct {
		Runtime []sdkRuntime `json:"runtime"`
	}
	sdkPingResponse struct {
		Message string `json:"message"`
	}
	sdkErrorResponse struct {
		Message string `json:"message"`
	}
)

// sdkCall sends a request as the SDK does (X-Pesto-Token, Content-Type and
// Accept application/json; the body marshalled from in, if any) and, as
// the SDK does, decodes a 200's body into out and any other answer's into
// an error response, whose message it returns. A 200 the SDK could not
// decode fails t: that is what a user of the SDK would see.
func (s *stack) sdkCall(t *testing.T, method, path, key string, in, out any) (status int, message string) {
	t.Helper()
	var body io.Reader = http.NoBody
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.gateway+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Pesto-Token", key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		var e sdkErrorResponse
		_ = json.NewDecoder(res.Body).Decode(&e) // the SDK, too, keeps an empty one
		return res.StatusCode, e.Message
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		t.Fatalf("%s %s: the SDK cannot read the answer: reading json body: %v", method, path, err)
	}
	return res.StatusCode, ""
}

// checkSDK drives the demo stack as a user of Pesto's Go SDK would, with a
// trial key of its own: Ping, ListRuntimes, Execute of the runtime listed
// (the demo API answers the code as its output), Execute of a runtime the
// API lacks (the SDK's ErrRuntimeNotFound), each call let through by auth
// and counted.
func (s *stack) checkSDK(t *testing.T) {
	res := s.do(t, "POST", s.gateway+"/api/trial", nil, "")
	m := regexp.MustCompile(`^\{"token":"(TRIAL-[A-Za-z0-9]{58})"\}$`).FindStringSubmatch(res.body)
	if res.status != 200 || m == nil {
		t.Fatalf("POST /api/trial: %d %q", res.status, res.body)
	}
	key := m[1]

	var ping sdkPingResponse
	if status, msg := s.sdkCall(t, "GET", "/api/ping", key, nil, &ping); status != 200 || ping.Message != "OK" {
		t.Errorf("Ping: %d %q %+v, want 200 {Message: OK}", status, msg, ping)
	}

	var runtimes sdkRuntimeResponse
	status, msg := s.sdkCall(t, "GET", "/api/list-runtimes", key, nil, &runtimes)
	want := []sdkRuntime{{Language: "Demo", Version: "1.0.0", Aliases: []string{"demo"}, Compiled: false}}
	if status != 200 || !slices.EqualFunc(runtimes.Runtime, want, func(a, b sdkRuntime) bool {
		return a.Language == b.Language && a.Version == b.Version && slices.Equal(a.Aliases, b.Aliases) && a.Compiled == b.Compiled
	}) {
		t.Fatalf("ListRuntimes: %d %q %+v, want %+v", status, msg, runtimes, want)
	}

	// As the SDK sends CodeRequest{Language, Version: VersionLatest, Code,
	// CompileTimeout: 5 * time.Second, RunTimeout: 5 * time.Second,
	// MemoryLimit: 128 << 20}: durations in milliseconds.
	code := "print(\"Hello, Pesto\")\n"
	var out sdkCodeResponse
	status, msg = s.sdkCall(t, "POST", "/api/execute", key, sdkCodeRequest{
		Language: runtimes.Runtime[0].Language, Version: "latest", Code: code,
		CompileTimeout: 5000, RunTimeout: 5000, MemoryLimit: 128 << 20,
	}, &out)
	wantOut := sdkCodeResponse{Language: "Demo", Version: "1.0.0", Runtime: sdkOutput{Stdout: code, Output: code}}
	if status != 200 || out != wantOut {
		t.Errorf("Execute: %d %q %+v, want %+v", status, msg, out, wantOut)
	}

	if status, msg := s.sdkCall(t, "POST", "/api/execute", key, sdkCodeRequest{Language: "Python", Version: "3.10.10", Code: "print(1)"}, nil); status != 400 || msg != "Runtime not found" {
		t.Errorf("Execute of Python: %d %q, want 400 \"Runtime not found\" (the SDK's ErrRuntimeNotFound)", status, msg)
	}

	var rec struct{ UserEmail string }
	if err := json.Unmarshal([]byte(s.redis(t, "GET", key)), &rec); err != nil {
		t.Fatalf("trial record: %v", err)
	}
	if got := s.redis(t, "GET", counterKey(rec.UserEmail)); got != "4" {
		t.Errorf("%s = %q after the SDK's 4 calls, want 4", counterKey(rec.UserEmail), got)
	}
}

// checkGatewayLog wants Traefik's log free of the warning it gives at start
// for a ForwardAuth without maxResponseBodySize (docker/traefik/dynamic.yaml).
func (s *stack) checkGatewayLog(t *testing.T) {
	out := s.mustCompose("logs", "--no-color", "gateway")
	if strings.Contains(out, "maxResponseBodySize") {
		t.Errorf("the gateway warns about maxResponseBodySize:\n%s", out)
	}
	if !strings.Contains(out, "Traefik version") {
		t.Errorf("the gateway's log lacks its start line: cannot judge it\n%s", out)
	}
}
