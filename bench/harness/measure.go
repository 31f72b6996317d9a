package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"debug/buildinfo"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"pesto/shared/wire"
)

// Parameters of the run that SPEC §7 does not set.
const (
	// readyStarts: each service is started this many times and its
	// start-to-ready time is the median; the last start is measured on.
	readyStarts = 3
	// idleCalls are made to each service before its idle RSS is read again.
	idleCalls = 100
	// maxExactLimit caps the limit of the quota-exactness key; the limit is
	// otherwise what auth serves in exactFill, so that exactRun surely
	// goes beyond it whatever the machine.
	maxExactLimit = 200000
	exactFill     = 3 * time.Second
	exactRun      = 8 * time.Second
	// throughputLimit is the MonthlyLimit of the throughput key: never
	// reached, yet every call is counted (the real hot path).
	throughputLimit = 1_000_000_000_000
	// manyKeys is the number of keys of the many-keys load, one email each.
	manyKeys = 10000
	// benchRate is REGISTER_RATE and TRIAL_RATE, benchGlobalRate their global caps: the
	// limits must not be what is measured (and a per-client rate is below its cap, at the
	// widest IPv6 multiple, or registration does not start).
	benchRate       = "100000/s"
	benchGlobalRate = "1000000/s"
	// benchKeyRate is KEY_RATE of the auth measured against the targets:
	// the largest rate, which no load here reaches, so that every call is
	// checked against its key's window and none refused by it. A second
	// auth runs with KEY_RATE=off, for the rate's cost.
	benchKeyRate = "1000000/s"
	// rateExactCount a second is the rate of the rate-exactness key,
	// hammered for rateRun through two replicas.
	rateExactCount = 1000
	rateRun        = 5 * time.Second
)

// Emails of the seeded keys. UNMETERED_EMAILS is empty: both are metered.
const (
	throughputEmail = "bench-throughput@example.com"
	exactEmail      = "bench-exact@example.com"
	rateEmail       = "bench-rate@example.com"
)

// bench is one run of the harness.
type bench struct {
	o   options
	tmp string
	sup *supervisor
	log io.Writer // progress lines
	rdb rueidis.Client

	redis *proc
}

func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(b.log, "bench: "+format+"\n", args...)
}

// measure does the whole run and returns its report.
func (b *bench) measure(ctx context.Context) (*report, error) {
	rep := newReport(b.o)
	authBin, regBin := b.o.authBin, b.o.regBin
	rep.goVersion = goVersionOf(authBin)
	rep.authVersion = firstLine(commandOutput(authBin, "version"))

	b.progress("building bench/reference")
	refBin, err := b.buildReference(ctx)
	if err != nil {
		return nil, err
	}

	redisURL, err := b.startRedis(ctx)
	if err != nil {
		return nil, err
	}
	defer b.rdb.Close()

	throughputToken, exactToken, rateToken := randomToken(), randomToken(), randomToken()
	if err := b.seed(ctx, throughputToken, wire.TokenRecord{UserEmail: throughputEmail, MonthlyLimit: throughputLimit}); err != nil {
		return nil, err
	}
	// Its hashed form too, for the auth with KEY_STORAGE=hashed (the
	// plain one finds the plaintext first and never looks further).
	if err := b.seed(ctx, wire.HashedKey(throughputToken), wire.TokenRecord{UserEmail: throughputEmail, MonthlyLimit: throughputLimit}); err != nil {
		return nil, err
	}
	if err := b.seedSignups(ctx); err != nil {
		return nil, err
	}
	tokenHeader := "X-Pesto-Token: " + throughputToken
	manyPrefix := randomToken()[:20]
	if err := b.seedMany(ctx, manyPrefix); err != nil {
		return nil, err
	}
	manyScript := manyKeysScript(manyPrefix, manyKeys)

	// Start and idle footprint of each server.
	authEnv := func(port int) []string {
		return []string{"PORT=" + strconv.Itoa(port), "REDIS_URL=" + redisURL, "LOG_LEVEL=warn",
			"ENVIRONMENT=bench", "UNMETERED_EMAILS=", "KEY_RATE=" + benchKeyRate}
	}
	b.progress("starting auth")
	auth, err := b.startService(ctx, "auth", authBin, authEnv, &rep.auth)
	if err != nil {
		return nil, err
	}
	b.progress("starting reference")
	ref, err := b.startService(ctx, "reference", refBin, func(port int) []string {
		return []string{"PORT=" + strconv.Itoa(port)}
	}, &rep.reference)
	if err != nil {
		return nil, err
	}
	b.progress("starting auth with KEY_STORAGE=hashed")
	authHashed, err := b.startService(ctx, "auth-hashed", authBin, func(port int) []string {
		return append(authEnv(port), "KEY_STORAGE=hashed")
	}, &rep.authHashed)
	if err != nil {
		return nil, err
	}
	b.progress("starting auth with KEY_RATE=off")
	authNoRate, err := b.startService(ctx, "auth-norate", authBin, func(port int) []string {
		return append(authEnv(port), "KEY_RATE=off") // the last of a name wins
	}, &rep.authNoRate)
	if err != nil {
		return nil, err
	}
	var reg *proc
	if b.o.authOnly {
		err = errors.New("not measured (-auth-only)")
	} else {
		b.progress("starting registration")
		reg, err = b.startService(ctx, "registration", regBin, func(port int) []string {
			return []string{"PORT=" + strconv.Itoa(port), "REDIS_URL=" + redisURL, "LOG_LEVEL=warn",
				"ENVIRONMENT=bench", "REGISTER_RATE=" + benchRate, "TRIAL_RATE=" + benchRate,
				"REGISTER_GLOBAL_RATE=" + benchGlobalRate, "TRIAL_GLOBAL_RATE=" + benchGlobalRate,
				// The load adds signups to a list already -signups long: the
				// bound must not turn them into 503s.
				"WAITING_LIST_MAX=1000000"}
		}, &rep.registration)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		rep.registration.na = "n/a: " + firstLine(err.Error())
		rep.register.na, rep.trial.na = rep.registration.na, rep.registration.na
		reg = nil
	}

	client := &http.Client{Timeout: 2 * time.Second}
	if err := b.idleCalls(auth, &rep.auth, func(i int) error {
		return expect(client, "GET", url(auth, "/"), "", "", throughputToken, http.StatusOK)
	}); err != nil {
		return nil, err
	}
	if err := b.idleCalls(ref, &rep.reference, func(i int) error {
		return expect(client, "GET", url(ref, "/"), "", "", "", http.StatusOK)
	}); err != nil {
		return nil, err
	}
	if reg != nil {
		if err := b.probeRegistration(client, reg, rep); err != nil {
			return nil, err
		}
	}

	// Throughput and latency: auth against the reference, alternately,
	// under each load: the hot key, and many keys.
	type runKind struct {
		p              *proc
		header, script string
		runs           *[]wrkResult
	}
	kinds := []runKind{
		{auth, tokenHeader, plainScript, &rep.authRuns},
		{ref, tokenHeader, plainScript, &rep.refRuns},
		{auth, "", manyScript, &rep.manyRuns},
		{ref, "", manyScript, &rep.refManyRuns},
		{authHashed, tokenHeader, plainScript, &rep.hashedRuns},
		{authHashed, "", manyScript, &rep.hashedManyRuns},
		{authNoRate, tokenHeader, plainScript, &rep.noRateRuns},
		{authNoRate, "", manyScript, &rep.noRateManyRuns},
	}
	b.progress("warming up auth and reference (%s each, both loads)", b.o.warmup)
	for _, k := range kinds {
		if _, err := b.load(ctx, k.p, "/", k.header, k.script, b.o.warmup); err != nil {
			return nil, err
		}
	}
	for round := range b.o.rounds {
		order := kinds
		if round%2 == 1 {
			order = slices.Clone(kinds)
			slices.Reverse(order)
		}
		for _, k := range order {
			what := "hot key"
			if k.header == "" {
				what = fmt.Sprintf("%d keys", manyKeys)
			}
			b.progress("round %d/%d: %s, %s, wrk -t%d -c%d -d%s", round+1, b.o.rounds, k.p.name, what, b.o.threads, b.o.conns, b.o.duration)
			res, err := b.measuredLoad(ctx, k.p, "/", k.header, k.script)
			if err != nil {
				return nil, err
			}
			if res.StatusErrors > 0 {
				b.progress("%s answered %d of %d requests with a status >= 400; its last lines:\n%s", k.p.name, res.StatusErrors, res.Requests, k.p.logTail())
			}
			*k.runs = append(*k.runs, res)
		}
	}
	if rep.auth.load, err = readMemory(auth); err != nil {
		return nil, err
	}
	if rep.reference.load, err = readMemory(ref); err != nil {
		return nil, err
	}

	if !b.o.authOnly {
		if err := b.exactness(ctx, authEnv, authBin, auth, exactToken, rep); err != nil {
			return nil, err
		}
		if err := b.rateExactness(ctx, authEnv, authBin, auth, rateToken, rep); err != nil {
			return nil, err
		}
	}

	if reg != nil {
		if err := b.registrationLoad(ctx, reg, rep); err != nil {
			return nil, err
		}
		if rep.registration.load, err = readMemory(reg); err != nil {
			return nil, err
		}
	}
	if reg != nil {
		if err := b.signupFlood(ctx, auth, tokenHeader, redisURL, rep); err != nil {
			return nil, err
		}
	} else {
		rep.flood.na = rep.registration.na
	}

	for _, s := range []*serviceStats{&rep.auth, &rep.registration, &rep.reference} {
		bin := map[string]string{"auth": authBin, "registration": regBin, "reference": refBin}[s.name]
		if fi, err := os.Stat(bin); err == nil {
			s.binary = fi.Size()
		}
	}
	rep.loadEnd = loadAverage()
	return rep, nil
}

// buildReference builds bench/reference as `make build` builds the services.
func (b *bench) buildReference(ctx context.Context) (string, error) {
	out := filepath.Join(b.tmp, "reference")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./bench/reference")
	cmd.Dir = b.o.root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./bench/reference: %v\n%s", err, msg)
	}
	return out, nil
}

// startRedis starts a redis-server without persistence on a free port and
// connects b.rdb to it.
func (b *bench) startRedis(ctx context.Context) (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	p, err := b.sup.start("redis", "redis-server", port, nil,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--logfile", "", "--loglevel", "warning")
	if err != nil {
		return "", err
	}
	b.redis = p
	addr := "127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(readyTimeout)
	for {
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
		if err == nil {
			b.rdb = c
			return "redis://" + addr, nil
		}
		select {
		case <-p.exited:
			return "", fmt.Errorf("redis-server exited: %v\n%s", p.waitErr, p.logTail())
		case <-ctx.Done():
			return "", ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("redis-server did not answer within %s: %v", readyTimeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// do runs one Redis command under a deadline.
func (b *bench) do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return b.rdb.Do(ctx, cmd)
}

func (b *bench) seed(ctx context.Context, token string, rec wire.TokenRecord) error {
	return b.do(ctx, b.rdb.B().Set().Key(token).Value(string(rec.Encode())).Build()).Error()
}

// seedMany seeds the keys of the many-keys load: "<prefix><5 digits>", each
// with an email of its own and a limit never reached.
func (b *bench) seedMany(ctx context.Context, prefix string) error {
	const batch = 1000
	for i := 0; i < manyKeys; i += batch {
		cmds := make(rueidis.Commands, 0, 2*batch)
		for j := i; j < min(i+batch, manyKeys); j++ {
			rec := wire.TokenRecord{UserEmail: fmt.Sprintf("bench-many-%05d@example.com", j), MonthlyLimit: throughputLimit}
			token := fmt.Sprintf("%s%05d", prefix, j)
			// Both forms: the plain auth finds the plaintext, the hashed one
			// the hashed form, each with one lookup.
			cmds = append(cmds, b.rdb.B().Set().Key(token).Value(string(rec.Encode())).Build(),
				b.rdb.B().Set().Key(wire.HashedKey(token)).Value(string(rec.Encode())).Build())
		}
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		for _, r := range b.rdb.DoMulti(ctx, cmds...) {
			if err := r.Error(); err != nil {
				cancel()
				return err
			}
		}
		cancel()
	}
	return nil
}

// commandStat is how many times Redis ran a command and its time.
type commandStat struct {
	calls int64
	spent time.Duration
}

// commandStats are the scripts (EVAL, EVALSHA) and the INCRBYs (also those
// run by scripts) Redis has run, from INFO commandstats.
func (b *bench) commandStats(ctx context.Context) (st struct{ scripts, incrby commandStat }, err error) {
	info, err := b.do(ctx, b.rdb.B().Info().Section("commandstats").Build()).ToString()
	if err != nil {
		return st, err
	}
	for line := range strings.SplitSeq(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "cmdstat_"), ":")
		var c *commandStat
		switch {
		case !ok:
			continue
		case name == "evalsha" || name == "eval":
			c = &st.scripts
		case name == "incrby":
			c = &st.incrby
		default:
			continue
		}
		for f := range strings.SplitSeq(rest, ",") {
			k, v, _ := strings.Cut(f, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "calls":
				c.calls += n
			case "usec":
				c.spent += time.Duration(n) * time.Microsecond
			}
		}
	}
	return st, nil
}

// seedSignups puts o.signups signups on the waiting list, as registration
// writes them.
func (b *bench) seedSignups(ctx context.Context) error {
	const batch = 1000
	for i := 0; i < b.o.signups; i += batch {
		vals := make([]string, 0, batch)
		for j := i; j < min(i+batch, b.o.signups); j++ {
			s := wire.Signup{Name: "Seed " + strconv.Itoa(j), Email: "seed-" + strconv.Itoa(j) + "@example.com", Building: "a bot", Calls: 1000}
			vals = append(vals, string(s.Encode()))
		}
		if err := b.do(ctx, b.rdb.B().Rpush().Key(wire.WaitingList).Element(vals...).Build()).Error(); err != nil {
			return err
		}
	}
	return nil
}

// startService starts a server readyStarts times, keeping the last one,
// and records its median start-to-ready time and its RSS once ready.
func (b *bench) startService(ctx context.Context, name, bin string, env func(port int) []string, s *serviceStats) (*proc, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%s is not built (make build)", name)
	}
	var p *proc
	for i := range readyStarts {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		if p, err = b.sup.start(name, bin, port, env(port)); err != nil {
			return nil, err
		}
		d, err := waitReady(ctx, p)
		if err != nil {
			b.sup.stop(p)
			return nil, err
		}
		s.readies = append(s.readies, d)
		if i < readyStarts-1 {
			b.sup.stop(p)
		}
	}
	var err error
	s.idle, err = readMemory(p)
	return p, err
}

// idleCalls makes idleCalls calls, one at a time, and reads p's RSS after.
func (b *bench) idleCalls(p *proc, s *serviceStats, call func(i int) error) error {
	for i := range idleCalls {
		if err := call(i); err != nil {
			return fmt.Errorf("%s, call %d of %d: %w", p.name, i+1, idleCalls, err)
		}
	}
	var err error
	s.afterCalls, err = readMemory(p)
	return err
}

// probeRegistration checks which of the measured routes registration
// serves (marking the others n/a), then makes its idle calls.
func (b *bench) probeRegistration(client *http.Client, reg *proc, rep *report) error {
	if err := expect(client, "POST", url(reg, "/api/register"), "application/json",
		`{"name":"Probe","email":"probe@example.com","building":"","calls":1}`, "", http.StatusCreated); err != nil {
		rep.register.na = "n/a: " + firstLine(err.Error())
	}
	if err := expect(client, "POST", url(reg, "/api/trial"), "", "", "", http.StatusOK); err != nil {
		rep.trial.na = "n/a: " + firstLine(err.Error())
	}
	var calls []func(i int) error
	if rep.register.na == "" {
		calls = append(calls, func(i int) error {
			body := fmt.Sprintf(`{"name":"Idle %d","email":"idle-%d@example.com","building":"","calls":1}`, i, i)
			return expect(client, "POST", url(reg, "/api/register"), "application/json", body, "", http.StatusCreated)
		})
	}
	if rep.trial.na == "" {
		calls = append(calls, func(int) error {
			return expect(client, "POST", url(reg, "/api/trial"), "", "", "", http.StatusOK)
		})
	}
	if len(calls) == 0 {
		rep.registration.callsNote = "GET /healthz (no route served yet)"
		calls = append(calls, func(int) error {
			return expect(client, "GET", url(reg, "/healthz"), "", "", "", http.StatusOK)
		})
	}
	return b.idleCalls(reg, &rep.registration, func(i int) error { return calls[i%len(calls)](i) })
}

// load runs wrk against p.
func (b *bench) load(ctx context.Context, p *proc, path, header, script string, d time.Duration) (wrkResult, error) {
	return runWrk(ctx, b.tmp, load{url: url(p, path), threads: b.o.threads, conns: b.o.conns,
		duration: d, header: header, script: script})
}

// measuredLoad runs wrk against p for o.duration and records the CPU time
// p and redis-server used meanwhile.
func (b *bench) measuredLoad(ctx context.Context, p *proc, path, header, script string) (wrkResult, error) {
	cpu0, err := cpuTime(p)
	if err != nil {
		return wrkResult{}, err
	}
	rcpu0, err := cpuTime(b.redis)
	if err != nil {
		return wrkResult{}, err
	}
	stats0, err := b.commandStats(ctx)
	if err != nil {
		return wrkResult{}, err
	}
	res, err := b.load(ctx, p, path, header, script, b.o.duration)
	if err != nil {
		return wrkResult{}, err
	}
	stats1, err := b.commandStats(ctx)
	if err != nil {
		return wrkResult{}, err
	}
	res.Scripts = stats1.scripts.calls - stats0.scripts.calls
	res.ScriptTime = stats1.scripts.spent - stats0.scripts.spent
	res.IncrbyTime = stats1.incrby.spent - stats0.incrby.spent
	cpu1, err := cpuTime(p)
	if err != nil {
		return wrkResult{}, err
	}
	rcpu1, err := cpuTime(b.redis)
	if err != nil {
		return wrkResult{}, err
	}
	res.ServerCPU, res.RedisCPU = cpu1-cpu0, rcpu1-rcpu0
	return res, nil
}

// exactness hammers a key of limit L through two auth replicas at once,
// beyond L, and compares the counter in Redis with the 200s wrk saw. Going
// well beyond L is what makes the comparison exact: wrk stops with requests
// in flight that it never counts, and by then they are 429s that count
// nothing.
func (b *bench) exactness(ctx context.Context, authEnv func(int) []string, authBin string, auth *proc, token string, rep *report) error {
	rps := median(rpsOf(rep.authRuns))
	limit := min(max(int64(rps*exactFill.Seconds()), 1000), maxExactLimit)
	rep.exact.limit = limit
	if err := b.seed(ctx, token, wire.TokenRecord{UserEmail: exactEmail, MonthlyLimit: limit}); err != nil {
		return err
	}
	b.progress("quota exactness: limit %d, auth ×2, wrk -t1 -c%d -d%s on each", limit, b.o.conns/2, exactRun)
	var err error
	rep.exact.hammered, err = b.hammer(ctx, authEnv, authBin, auth, token, exactEmail, exactRun)
	return err
}

// rateExactness hammers a key with a rate of rateExactCount a second (and
// a monthly limit never reached) through two auth replicas at once for
// rateRun, and compares the 200s with what the rate allows and with the
// counter in Redis.
func (b *bench) rateExactness(ctx context.Context, authEnv func(int) []string, authBin string, auth *proc, token string, rep *report) error {
	rate := wire.Rate{Count: rateExactCount, Per: time.Second}
	if err := b.seed(ctx, token, wire.TokenRecord{UserEmail: rateEmail, MonthlyLimit: throughputLimit, Rate: rate}); err != nil {
		return err
	}
	b.progress("rate exactness: %s, auth ×2, wrk -t1 -c%d -d%s on each", rate, b.o.conns/2, rateRun)
	rep.rateExact.count, rep.rateExact.run, rep.rateExact.unread = rateExactCount, rateRun, int64(2*max(b.o.conns/2, 1))
	var err error
	rep.rateExact.hammered, err = b.hammer(ctx, authEnv, authBin, auth, token, rateEmail, rateRun)
	return err
}

// hammer calls token through auth and a second replica at once (wrk -t1
// on each, half the connections each) for d, and returns what wrk counted
// and the calls counted meanwhile on email's counter.
func (b *bench) hammer(ctx context.Context, authEnv func(int) []string, authBin string, auth *proc, token, email string, d time.Duration) (hammered, error) {
	var h hammered
	port, err := freePort()
	if err != nil {
		return h, err
	}
	auth2, err := b.sup.start("auth-2", authBin, port, authEnv(port))
	if err != nil {
		return h, err
	}
	defer b.sup.stop(auth2)
	if _, err := waitReady(ctx, auth2); err != nil {
		return h, err
	}

	keyBefore := wire.CounterKey(time.Now(), email)
	var (
		wg      sync.WaitGroup
		results [2]wrkResult
		errs    [2]error
	)
	for i, p := range []*proc{auth, auth2} {
		wg.Go(func() {
			results[i], errs[i] = runWrk(ctx, b.tmp, load{url: url(p, "/"), threads: 1, conns: max(b.o.conns/2, 1),
				duration: d, header: "X-Pesto-Token: " + token, script: countScript})
		})
	}
	wg.Wait()
	if err := errors.Join(errs[:]...); err != nil {
		return h, err
	}
	keys := []string{keyBefore}
	if k := wire.CounterKey(time.Now(), email); k != keyBefore {
		keys = append(keys, k) // the month turned during the run
	}
	for _, k := range keys {
		n, err := b.do(ctx, b.rdb.B().Get().Key(k).Build()).AsInt64()
		if err != nil && !rueidis.IsRedisNil(err) {
			return h, fmt.Errorf("GET %s: %w", k, err)
		}
		h.counter += n
	}
	for _, r := range results {
		h.requests += r.Requests
		h.allowed += r.Code(http.StatusOK)
		h.refused += r.Code(http.StatusTooManyRequests)
		h.socketErrors += r.SocketErrors()
	}
	h.other = h.requests - h.allowed - h.refused
	return h, nil
}

// registrationLoad measures POST /api/register (unique emails, the
// waiting list already long) and POST /api/trial.
func (b *bench) registrationLoad(ctx context.Context, reg *proc, rep *report) error {
	if rep.register.na == "" {
		before, err := b.do(ctx, b.rdb.B().Llen().Key(wire.WaitingList).Build()).AsInt64()
		if err != nil {
			return err
		}
		rep.register.listBefore = before
		b.progress("registration: POST /api/register, %d signups on the list", before)
		if rep.register.res, err = b.measuredLoad(ctx, reg, "/api/register", "", registerScript); err != nil {
			return err
		}
		if rep.register.listAfter, err = b.do(ctx, b.rdb.B().Llen().Key(wire.WaitingList).Build()).AsInt64(); err != nil {
			return err
		}
	}
	if rep.trial.na == "" {
		b.progress("registration: POST /api/trial")
		var err error
		if rep.trial.res, err = b.measuredLoad(ctx, reg, "/api/trial", "", trialScript); err != nil {
			return err
		}
	}
	return nil
}

// expect makes one request and checks its status.
func expect(client *http.Client, method, target, contentType, body, token string, want int) error {
	req, err := http.NewRequest(method, target, strings.NewReader(body))
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("X-Pesto-Token", token)
	}
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(res.Body, 200))
	if res.StatusCode != want {
		return fmt.Errorf("%s %s answered %d %s, want %d", method, req.URL.Path, res.StatusCode, strings.TrimSpace(string(msg)), want)
	}
	return nil
}

func url(p *proc, path string) string {
	return "http://127.0.0.1:" + strconv.Itoa(p.port) + path
}

// randomToken returns an approved-key-shaped token: 64 of [A-Za-z0-9].
func randomToken() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 64)
	for i := range b {
		b[i] = alphabet[randIndex(len(alphabet))]
	}
	return string(b)
}

// randIndex returns a uniform index below n from crypto/rand.
func randIndex(n int) int {
	var one [1]byte
	limit := 256 - 256%n
	for {
		_, _ = rand.Read(one[:]) // never fails (crypto/rand)
		if int(one[0]) < limit {
			return int(one[0]) % n
		}
	}
}

// median returns the middle value (the lower one of an even count).
func median[T cmp.Ordered](xs []T) T {
	var zero T
	if len(xs) == 0 {
		return zero
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

func rpsOf(rs []wrkResult) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = r.RPS()
	}
	return out
}

func goVersionOf(bin string) string {
	if bi, err := buildinfo.ReadFile(bin); err == nil {
		return bi.GoVersion
	}
	return runtime.Version()
}

func commandOutput(name string, args ...string) string {
	out, _ := exec.Command(name, args...).CombinedOutput()
	return strings.TrimSpace(string(out))
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// loadAverage is the 1, 5 and 15 minute load of /proc/loadavg.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
