package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"pesto/shared/wire"
)

// The scenario "auth under a signup flood" (SPEC §7, issue 11): auth
// loaded as in the rounds while registration takes signups from many
// addresses, and the waiting list holds floodListed entries built to be
// slow to scan.
const (
	floodListed = 100_000
	// floodAllowance is how many signups WAITING_LIST_MAX leaves room for
	// above the listed entries: what the flood may store.
	floodAllowance = 1000
	// floodEntryMax bounds what one stored signup costs Redis, its element
	// and its index entry: a stored signup is at most 1 KiB, and one of
	// that size costs about 2.9 KiB in all (registration:
	// TestSignupsCannotFillRedis).
	floodEntryMax = 3584
	// floodSlack covers Redis's own bookkeeping during the run (rate-limit
	// keys, client buffers).
	floodSlack = 2 << 20
	// floodConns is the flood's wrk connections (one thread), each sending
	// a signup every floodDelayMS at most: up to 320 signups a second, over
	// a million an hour, and what the list bound and the index must absorb
	// (a flood with no pause would measure the two cores auth shares with
	// wrk, registration and Redis here, not Redis).
	floodConns   = 16
	floodDelayMS = 50
	// floodDrain bounds the wait for Redis after the flood.
	floodDrain = 3 * time.Minute
)

// floodLua posts a signup with an email of its own on every request, each
// from an address of its own (X-Forwarded-For, believed from the trusted
// 127.0.0.1): per-address limits do not stop it.
const floodLua = `
function delay()
  return FLOOD_DELAY
end
function request()
  n = n + 1
  local ip = string.format("198.%d.%d.%d", 18 + id % 2, math.floor(n / 256) % 256, n % 256)
  local body = string.format('{"name":"Flood %d","email":"flood-%d-%d@example.com","building":"","calls":1}', id, id, n)
  return wrk.format("POST", "/api/register", {["Content-Type"] = "application/json", ["X-Forwarded-For"] = ip}, body)
end
`

var floodScript = threadsLua + countLua + strings.Replace(floodLua, "FLOOD_DELAY", strconv.Itoa(floodDelayMS), 1) + reportLua

// floodResult is what the scenario measured.
type floodResult struct {
	na                    string
	quiet                 wrkResult // auth just before the flood, same load
	auth                  wrkResult // auth during the flood
	signups               wrkResult // registration's flood
	listBefore, listAfter int64
	listMax               int64 // WAITING_LIST_MAX given to registration
	memBefore, memAfter   int64 // Redis used_memory
}

// bound is the most Redis may grow by: the list bound's room, at most
// floodEntryMax a signup, plus slack.
func (f floodResult) bound() int64 {
	return max(f.listMax-f.listBefore, 0)*floodEntryMax + floodSlack
}

// slowSignup is a waiting-list element the old services could have written
// that a scan of the list cannot skip cheaply: an escaped character (so it
// must be decoded) and a long field of escapes (so decoding it is slow).
func slowSignup(i int) string {
	return `{"name":"Slow ` + strconv.Itoa(i) + `","email":"slow-` + strconv.Itoa(i) + `@example.com","building":"` +
		strings.Repeat(`\u0001`, 150) + `","calls":1}`
}

// signupFlood runs the scenario: the list replaced by floodListed slow
// entries, a registration of its own that believes 127.0.0.1's
// X-Forwarded-For, then auth's load and the flood at once.
func (b *bench) signupFlood(ctx context.Context, auth *proc, tokenHeader, redisURL string, rep *report) error {
	f := &rep.flood
	b.progress("signup flood: listing %d entries built to be slow to scan", floodListed)
	if err := b.do(ctx, b.rdb.B().Del().Key(wire.WaitingList).Build()).Error(); err != nil {
		return err
	}
	const batch = 1000
	for i := 0; i < floodListed; i += batch {
		vals := make([]string, 0, batch)
		for j := i; j < i+batch; j++ {
			vals = append(vals, slowSignup(j))
		}
		if err := b.do(ctx, b.rdb.B().Rpush().Key(wire.WaitingList).Element(vals...).Build()).Error(); err != nil {
			return err
		}
	}
	f.listMax = floodListed + 1 + floodAllowance // the first signup, then the flood's room
	port, err := freePort()
	if err != nil {
		return err
	}
	reg, err := b.sup.start("registration-flood", b.o.regBin, port, []string{"PORT=" + strconv.Itoa(port),
		"REDIS_URL=" + redisURL, "LOG_LEVEL=warn", "ENVIRONMENT=bench", "TRUSTED_PROXIES=127.0.0.1",
		"REGISTER_RATE=" + benchRate, "TRIAL_RATE=" + benchRate,
		"REGISTER_GLOBAL_RATE=" + benchGlobalRate, "TRIAL_GLOBAL_RATE=" + benchGlobalRate,
		"WAITING_LIST_MAX=" + strconv.FormatInt(f.listMax, 10)})
	if err != nil {
		return err
	}
	defer b.sup.stop(reg)
	if _, err := waitReady(ctx, reg); err != nil {
		f.na = "n/a: " + firstLine(err.Error())
		return nil
	}

	// The first signup brings registration's index of people up to date
	// with the entries listed behind its back (as the old services write
	// them), in steps; that one-time cost is not the flood's.
	b.progress("signup flood: a first signup, while registration indexes the listed entries")
	client := &http.Client{Timeout: 5 * time.Second}
	warm := `{"name":"Warm","email":"warm@example.com","building":"","calls":1}`
	for deadline := time.Now().Add(floodDrain); ; {
		err := expect(client, "POST", url(reg, "/api/register"), "application/json", warm, "", http.StatusCreated)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("registration did not take a first signup within %s: %w", floodDrain, err)
		}
	}
	if f.listBefore, err = b.do(ctx, b.rdb.B().Llen().Key(wire.WaitingList).Build()).AsInt64(); err != nil {
		return err
	}
	if f.memBefore, err = b.usedMemory(ctx); err != nil {
		return err
	}
	b.progress("signup flood: auth alone first (its quiet p99)")
	if f.quiet, err = b.load(ctx, auth, "/", tokenHeader, countScript, b.o.duration); err != nil {
		return err
	}
	b.progress("signup flood: auth wrk -t%d -c%d -d%s while registration takes signups (wrk -t1 -c%d, %d ms apart)", b.o.threads, b.o.conns, b.o.duration, floodConns, floodDelayMS)
	type result struct {
		res wrkResult
		err error
	}
	flood := make(chan result, 1)
	go func() {
		// A second longer than auth's run, so that auth is measured under
		// the flood from start to end.
		res, err := runWrk(ctx, b.tmp, load{url: url(reg, "/api/register"), threads: 1, conns: floodConns,
			duration: b.o.duration + time.Second, script: floodScript})
		flood <- result{res, err}
	}()
	f.auth, err = b.load(ctx, auth, "/", tokenHeader, countScript, b.o.duration)
	fr := <-flood
	if err != nil {
		return err
	}
	if fr.err != nil {
		return fr.err
	}
	f.signups = fr.res
	// Scripts a registration gave up on still run in Redis: wait for the
	// backlog to drain (at most floodDrain) before reading the result.
	drained, cancel := context.WithTimeout(ctx, floodDrain)
	defer cancel()
	if f.listAfter, err = b.rdb.Do(drained, b.rdb.B().Llen().Key(wire.WaitingList).Build()).AsInt64(); err != nil {
		return fmt.Errorf("redis still busy %s after the flood: %w", floodDrain, err)
	}
	f.memAfter, err = b.usedMemory(ctx)
	return err
}

// usedMemory is Redis's INFO used_memory.
func (b *bench) usedMemory(ctx context.Context) (int64, error) {
	s, err := b.do(ctx, b.rdb.B().Info().Section("memory").Build()).ToString()
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(s, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("INFO memory has no used_memory")
}

// floodTargets are the scenario's lines of the verdict table.
func (r *report) floodTargets() []target {
	f := r.flood
	names := []string{
		"auth under a signup flood: no answer ≥ 400, no socket error",
		"auth under a signup flood: p99 ≤ 1.5× its quiet p99",
		"Redis memory growth under the flood ≤ the list bound's room",
	}
	if f.na != "" {
		var ts []target
		for _, n := range names {
			ts = append(ts, target{name: n, measured: f.na, status: "n/a"})
		}
		return ts
	}
	errs := f.auth.StatusErrors + f.auth.SocketErrors()
	grown := f.memAfter - f.memBefore
	return []target{
		{names[0], fmt.Sprintf("%d of %d answers ≥ 400, %d socket errors", f.auth.StatusErrors, f.auth.Requests, f.auth.SocketErrors()), verdict(errs == 0)},
		{names[1], fmt.Sprintf("%s vs %s quiet = %.2f×", us(f.auth.P99US), us(f.quiet.P99US), ratio(float64(f.auth.P99US), float64(f.quiet.P99US))),
			verdict(ratio(float64(f.auth.P99US), float64(f.quiet.P99US)) <= maxP99Ratio)},
		{names[2], fmt.Sprintf("%+.1f MiB for %d new entries; bound %s (%d × %d B + %s)", float64(grown)/(1<<20), f.listAfter-f.listBefore,
			mib(f.bound()), max(f.listMax-f.listBefore, 0), floodEntryMax, mib(floodSlack)), verdict(grown <= f.bound())},
	}
}

// floodSection is the scenario's part of the report.
func (r *report) floodSection(p func(string, ...any)) {
	f := r.flood
	p("## auth under a signup flood")
	p("")
	if f.na != "" {
		p("%s", f.na)
		p("")
		return
	}
	p("The waiting list holds %d entries built to be slow to scan (an escaped character and a 900-byte field of escapes each); "+
		"registration (`WAITING_LIST_MAX=%d`, `TRUSTED_PROXIES=127.0.0.1`, limits out of the way) takes signups from a new address each "+
		"(`X-Forwarded-For`), `wrk -t1 -c%d` with %d ms between a connection's requests, while auth takes its load as in the rounds (`wrk -t%d -c%d -d%s`).",
		f.listBefore, f.listMax, floodConns, floodDelayMS, r.o.threads, r.o.conns, r.o.duration)
	p("")
	p("| | requests | req/s | p50 | p99 | answers |")
	p("|---|---|---|---|---|---|")
	p("| auth, quiet (just before) | %d | %.0f | %s | %s | %v, %d socket errors |", f.quiet.Requests, f.quiet.RPS(), us(f.quiet.P50US), us(f.quiet.P99US), f.quiet.Codes, f.quiet.SocketErrors())
	p("| auth, during the flood | %d | %.0f | %s | %s | %v, %d socket errors |", f.auth.Requests, f.auth.RPS(), us(f.auth.P50US), us(f.auth.P99US), f.auth.Codes, f.auth.SocketErrors())
	p("| registration, the flood | %d | %.0f | %s | %s | %v, %d socket errors |", f.signups.Requests, f.signups.RPS(), us(f.signups.P50US), us(f.signups.P99US), f.signups.Codes, f.signups.SocketErrors())
	p("")
	p("Waiting list %d → %d entries; Redis used_memory %s → %s.", f.listBefore, f.listAfter, mib(f.memBefore), mib(f.memAfter))
	p("")
}
