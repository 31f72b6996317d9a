//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
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
)

// The flood steps' targets (issue "One hostile client cannot take the
// stack down"): while one client floods the gateway, a valid key is called
// every probeEvery, each call given probeTimeout; at least probeShare of
// those calls are answered 200 in time, and once the flood ends every call
// is again within recoverWithin.
const (
	probeEvery    = 200 * time.Millisecond
	probeTimeout  = 2 * time.Second
	probeShare    = 0.95
	recoverWithin = 10 * time.Second
	// After the flood, the calls are watched this long.
	watchAfter = 12 * time.Second
	// probeKey is the valid key of the probes, with room for every call.
	probeKey = "e2e-probe-key-ooooooooooooooooooooooooooooooooooooooooooooooooooo"
)

// flood is one hostile client's flood, run in a container of its own on
// the stack's frontend network: the gateway sees it at an address of its
// own, the probes (from the host) at another.
type flood struct {
	name string
	// script is the flooder container's sh command; the image has wrk,
	// slowloris and busybox (deploy/e2e/run.sh).
	script string
}

var floods = []flood{
	// The shape first seen to take the stack down: many connections, no
	// valid key.
	{"1,000 connections with a bad key", `wrk -t2 -c1000 -d20s -H 'X-Pesto-Token: nope' http://gateway:80/api/list-runtimes`},
	// Every public route at once: a key holder's usage, signups, trials.
	{"usage, signups and trials", `cat > /tmp/register.lua <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"name":"Flood","email":"flood@example.com","building":"","calls":1}'
EOF
cat > /tmp/trial.lua <<'EOF'
wrk.method = "POST"
EOF
wrk -t1 -c300 -d20s -H 'X-Pesto-Token: nope' http://gateway:80/api/usage > /tmp/usage.out &
wrk -t1 -c300 -d20s -s /tmp/register.lua http://gateway:80/api/register > /tmp/register.out &
wrk -t1 -c300 -d20s -s /tmp/trial.lua http://gateway:80/api/trial > /tmp/trial.out &
wait
for f in usage register trial; do echo "== $f"; cat /tmp/$f.out; done`},
	// Slow clients: each holds a connection open, a header line every 5 s.
	{"2,000 slow connections", `slowloris -c 2000 -d 20s -every 5s gateway:80`},
}

// probe is one call of the valid key.
type probe struct {
	start time.Time
	took  time.Duration
	got   string // "200", another status, or the error
}

func (p probe) ok() bool { return p.got == "200" && p.took <= probeTimeout }

// runFlood floods the stack with f while probing it, and checks the
// targets, the containers' restarts and their memory.
func (s *stack) runFlood(t *testing.T, f flood) {
	before := s.containerStates(t)
	sampler := s.sampleMemory(t)

	probes := make(chan []probe, 1)
	stopProbing := make(chan struct{})
	go func() { probes <- s.probe(stopProbing) }()

	image := mustEnv(t, "PESTO_E2E_FLOOD_IMAGE")
	start := time.Now()
	cmd := exec.Command(s.docker, "run", "--rm", "--network", project+"_frontend", "--entrypoint", "/bin/sh", image, "-c", f.script)
	out, err := cmd.CombinedOutput()
	end := time.Now()
	if err != nil {
		close(stopProbing)
		<-probes
		t.Fatalf("the flood: %v\n%s", err, out)
	}
	t.Logf("flooder (%v):\n%s", end.Sub(start).Round(time.Second), summarizeWrk(string(out)))
	time.Sleep(watchAfter) // the calls after the flood are what is watched now
	close(stopProbing)
	got := <-probes
	peaks := sampler()

	var during, after []probe
	for _, p := range got {
		switch {
		case p.start.Before(start):
		case p.start.Before(end):
			during = append(during, p)
		default:
			after = append(after, p)
		}
	}
	ok := 0
	for _, p := range during {
		if p.ok() {
			ok++
		}
	}
	t.Logf("valid key during the flood: %d of %d answered 200 within %v; %s", ok, len(during), probeTimeout, latencies(during))
	if len(during) == 0 || float64(ok) < probeShare*float64(len(during)) {
		t.Errorf("valid key during the flood: %d of %d answered, want at least %.0f%%; not answered: %v",
			ok, len(during), probeShare*100, failures(during))
	}
	// Once the flood is over: a 200 within recoverWithin, and from the
	// first 200 on, every call.
	recovered := -1
	for i, p := range after {
		if p.ok() {
			recovered = i
			break
		}
	}
	switch {
	case recovered < 0:
		t.Errorf("valid key after the flood: no call answered in %v: %v", watchAfter, failures(after))
	case after[recovered].start.Sub(end) > recoverWithin:
		t.Errorf("valid key after the flood: first answered %v after it, want within %v", after[recovered].start.Sub(end), recoverWithin)
	default:
		if bad := failures(after[recovered:]); len(bad) > 0 {
			t.Errorf("valid key after the flood: not answered again: %v", bad)
		}
		t.Logf("valid key after the flood: answered %v after it ended, and every call since (%d)",
			max(0, after[recovered].start.Sub(end)).Round(time.Millisecond), len(after)-recovered)
	}

	s.checkNoRestarts(t, before)
	s.checkPeaks(t, peaks)
}

// probe calls the valid key every probeEvery until stop is closed.
func (s *stack) probe(stop <-chan struct{}) []probe {
	c := &http.Client{Timeout: probeTimeout}
	var got []probe
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	for {
		p := probe{start: time.Now()}
		req, _ := http.NewRequest("GET", s.gateway+"/api/ping", nil)
		req.Header.Set("X-Pesto-Token", probeKey)
		res, err := c.Do(req)
		p.took = time.Since(p.start)
		if err != nil {
			p.got = err.Error()
		} else {
			res.Body.Close()
			p.got = strconv.Itoa(res.StatusCode)
		}
		got = append(got, p)
		select {
		case <-stop:
			return got
		case <-tick.C:
		}
	}
}

func failures(ps []probe) []string {
	var bad []string
	for _, p := range ps {
		if !p.ok() {
			bad = append(bad, fmt.Sprintf("%s after %v", p.got, p.took.Round(time.Millisecond)))
		}
	}
	return bad
}

func latencies(ps []probe) string {
	if len(ps) == 0 {
		return "no calls"
	}
	d := make([]time.Duration, len(ps))
	for i, p := range ps {
		d[i] = p.took
	}
	slices.Sort(d)
	at := func(q float64) time.Duration { return d[int(q*float64(len(d)-1))].Round(time.Millisecond) }
	return fmt.Sprintf("latency p50 %v, p95 %v, worst %v", at(0.5), at(0.95), at(1))
}

// summarizeWrk keeps the lines of wrk's and slowloris's reports worth a log.
func summarizeWrk(out string) string {
	var keep []string
	for _, line := range strings.Split(out, "\n") {
		if regexp.MustCompile(`^(==|  [0-9]+ requests|  Socket errors|  Non-2xx|Requests/sec|slowloris:|    Latency)`).MatchString(line) {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

// containerState is what tells that a container was restarted.
type containerState struct {
	started  string
	restarts int
	oom      bool
	status   string
}

func (s *stack) containerStates(t *testing.T) map[string]containerState {
	t.Helper()
	states := map[string]containerState{}
	for _, c := range s.containers(t) {
		out, err := exec.Command(s.docker, "inspect", "--format",
			"{{.State.StartedAt}} {{.RestartCount}} {{.State.OOMKilled}} {{.State.Status}}", c.Name).Output()
		f := strings.Fields(string(out))
		if err != nil || len(f) != 4 {
			t.Fatalf("docker inspect %s: %v %q", c.Name, err, out)
		}
		n, _ := strconv.Atoi(f[1])
		states[c.Name] = containerState{started: f[0], restarts: n, oom: f[2] == "true", status: f[3]}
	}
	return states
}

// checkNoRestarts wants every container as it was: running, not restarted,
// not killed for memory.
func (s *stack) checkNoRestarts(t *testing.T, before map[string]containerState) {
	t.Helper()
	for name, now := range s.containerStates(t) {
		was := before[name]
		if now.status != "running" || now.oom || now.restarts != was.restarts || now.started != was.started {
			t.Errorf("%s: %s, OOM-killed %v, restarted %d times (before %d), started %s (before %s): want running, untouched",
				name, now.status, now.oom, now.restarts, was.restarts, now.started, was.started)
		}
	}
}

// peak is a container's highest memory seen during a flood.
type peak struct {
	used, limit float64 // MiB, as docker stats gives them
}

// sampleMemory follows docker stats until the returned function is
// called, which returns each container's peak.
func (s *stack) sampleMemory(t *testing.T) func() map[string]peak {
	t.Helper()
	var names []string
	for _, c := range s.containers(t) {
		names = append(names, c.Name)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, s.docker, append([]string{"stats", "--format", "{{.Name}}\t{{.MemUsage}}"}, names...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	peaks := map[string]peak{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		clear := regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)
		for sc.Scan() {
			name, usage, _ := strings.Cut(clear.ReplaceAllString(sc.Text(), ""), "\t")
			used, limit, ok := strings.Cut(usage, " / ")
			u, err1 := mebibytes(used)
			l, err2 := mebibytes(limit)
			if !ok || err1 != nil || err2 != nil {
				continue
			}
			mu.Lock()
			if u >= peaks[name].used {
				peaks[name] = peak{used: u, limit: l}
			}
			mu.Unlock()
		}
	}()
	return func() map[string]peak {
		cancel()
		cmd.Wait()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return peaks
	}
}

// checkPeaks logs each container's peak (docker stats, and the cgroup's
// own highest usage since the container started, page cache included,
// where the kernel keeps one) and wants it under the limit.
func (s *stack) checkPeaks(t *testing.T, peaks map[string]peak) {
	t.Helper()
	var lines []string
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range peaks {
			if !yield(n) {
				return
			}
		}
	}) {
		p := peaks[name]
		line := fmt.Sprintf("%s: peak %.1f MiB of %.0f MiB", name, p.used, p.limit)
		if cg, ok := s.cgroupPeak(name); ok {
			line += fmt.Sprintf(" (cgroup's highest since start, page cache included: %.1f MiB)", cg)
		}
		lines = append(lines, line)
		if p.used >= p.limit {
			t.Errorf("%s: %.1f MiB used, at its limit %.0f MiB", name, p.used, p.limit)
		}
	}
	t.Logf("memory during the flood:\n%s", strings.Join(lines, "\n"))
}

// cgroupPeak reads the highest memory usage the kernel recorded for a
// container (cgroup v1 memory.max_usage_in_bytes, v2 memory.peak), in MiB.
func (s *stack) cgroupPeak(name string) (float64, bool) {
	out, err := exec.Command(s.docker, "inspect", "--format", "{{.State.Pid}}", name).Output()
	if err != nil {
		return 0, false
	}
	b, err := os.ReadFile("/proc/" + strings.TrimSpace(string(out)) + "/cgroup")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		var file string
		switch {
		case f[0] == "0" && f[1] == "":
			file = filepath.Join("/sys/fs/cgroup", f[2], "memory.peak")
		case slices.Contains(strings.Split(f[1], ","), "memory"):
			file = filepath.Join("/sys/fs/cgroup/memory", f[2], "memory.max_usage_in_bytes")
		default:
			continue
		}
		v, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		n, err := strconv.ParseFloat(strings.TrimSpace(string(v)), 64)
		if err == nil {
			return n / (1 << 20), true
		}
	}
	return 0, false
}

// checkLiveness freezes Traefik inside the running gateway (SIGSTOP: it
// keeps its connections and answers nothing, as a gateway that thrashes
// does) and wants the liveness rule to kill it and Docker to restart the
// container, serving valid keys again, with no operator.
func (s *stack) checkLiveness(t *testing.T) {
	before := s.containerStates(t)
	gw := ""
	for name := range before {
		if strings.Contains(name, "-gateway-") {
			gw = name
		}
	}
	if out, err := exec.Command(s.docker, "exec", gw, "sh", "-c", "kill -STOP $(pidof traefik)").CombinedOutput(); err != nil {
		t.Fatalf("freezing traefik: %v\n%s", err, out)
	}
	frozen := time.Now()
	c := &http.Client{Timeout: probeTimeout}
	ok := func() bool {
		req, _ := http.NewRequest("GET", s.gateway+"/api/ping", nil)
		req.Header.Set("X-Pesto-Token", probeKey)
		res, err := c.Do(req)
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	}
	if ok() {
		t.Fatalf("a frozen gateway answered")
	}
	servicetest.Poll(t, 30*time.Second, "the frozen gateway restarted and answering", func() bool {
		return s.containerStates(t)[gw].restarts > before[gw].restarts && ok()
	})
	t.Logf("the frozen gateway was restarted and answered again %v after it froze", time.Since(frozen).Round(100*time.Millisecond))
	servicetest.Poll(t, 30*time.Second, "the restarted gateway healthy", func() bool {
		for _, c := range s.containers(t) {
			if c.Name == gw {
				return c.Health == "healthy"
			}
		}
		return false
	})
}
