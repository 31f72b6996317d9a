package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The wrk Lua scripts. Every script ends with reportLua, whose done() prints
// one line "BENCH {json}" with the totals, exact latency percentiles and,
// when the script counts them, the responses by status summed over threads.
const (
	// threadsLua keeps the threads (done() runs in a state of its own and
	// reads their counters through thread:get) and numbers them.
	threadsLua = `
local threads = {}
function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  codes = {}
  n = 0
end
`
	// countLua counts responses by status. It costs wrk a Lua call per
	// response, so the throughput comparison runs without it.
	countLua = `
function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end
`
	reportLua = `
function done(summary, latency, requests)
  local all = {}
  for _, t in ipairs(threads) do
    for status, count in pairs(t:get("codes")) do
      all[status] = (all[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(all) do
    table.insert(parts, string.format('"%d":%d', status, count))
  end
  local e = summary.errors
  io.write(string.format('BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"timeout":%d,"status_errors":%d,"codes":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.timeout, e.status, table.concat(parts, ",")))
end
`
)

// registerLua posts a signup with an email of its own on every request:
// "bench-<thread>-<n>@example.com".
const registerLua = `
function request()
  n = n + 1
  local body = string.format('{"name":"Bench %d","email":"bench-%d-%d@example.com","building":"load test","calls":1000}', id, id, n)
  return wrk.format("POST", "/api/register", {["Content-Type"] = "application/json"}, body)
end
`

// trialLua asks for a trial key on every request.
const trialLua = `
wrk.method = "POST"
wrk.path = "/api/trial"
`

// manyKeysLua sends on every request the key of one of manyKeys seeded
// tokens ("<prefix><5 digits>"), chosen uniformly at random. The requests are
// made once in init, so each costs wrk a Lua call and a random number; the
// reference is loaded with the same script for the comparison.
const manyKeysLua = `
function init(args)
  codes = {}
  n = 0
  math.randomseed(id)
  reqs = {}
  for i = 0, %d - 1 do
    reqs[i + 1] = wrk.format(nil, nil, {["X-Pesto-Token"] = string.format("%s%%05d", i)})
  end
end
function request()
  return reqs[math.random(#reqs)]
end
`

// manyKeysScript is the wrk script of the many-keys load.
func manyKeysScript(prefix string, keys int) string {
	return threadsLua + fmt.Sprintf(manyKeysLua, keys, prefix) + reportLua
}

// Scripts as run.
var (
	plainScript    = threadsLua + reportLua
	countScript    = threadsLua + countLua + reportLua
	registerScript = threadsLua + countLua + registerLua + reportLua
	trialScript    = threadsLua + countLua + trialLua + reportLua
)

// load is one wrk run.
type load struct {
	url      string
	threads  int
	conns    int
	duration time.Duration
	header   string // one "Name: value" request header, optional
	script   string // the Lua script's text
}

// wrkResult is what reportLua prints.
type wrkResult struct {
	Requests     int64            `json:"requests"`
	DurationUS   int64            `json:"duration_us"`
	P50US        int64            `json:"p50_us"`
	P99US        int64            `json:"p99_us"`
	Connect      int64            `json:"connect"`
	Read         int64            `json:"read"`
	Write        int64            `json:"write"`
	Timeout      int64            `json:"timeout"`
	StatusErrors int64            `json:"status_errors"` // responses with a status >= 400
	Codes        map[string]int64 `json:"codes"`         // by status; empty unless the script counts

	// CPU time the server and redis-server used during the run, and the
	// scripts and INCRBYs (also those the scripts ran) Redis ran meanwhile
	// and their time (set by the harness, not by wrk).
	ServerCPU, RedisCPU time.Duration `json:"-"`
	Scripts             int64         `json:"-"`
	ScriptTime          time.Duration `json:"-"`
	IncrbyTime          time.Duration `json:"-"`
}

// CPUPerRequest is ServerCPU and RedisCPU per request.
func (r wrkResult) CPUPerRequest() (server, redis time.Duration) {
	if r.Requests == 0 {
		return 0, 0
	}
	return r.ServerCPU / time.Duration(r.Requests), r.RedisCPU / time.Duration(r.Requests)
}

// RPS is requests per second over the run.
func (r wrkResult) RPS() float64 {
	if r.DurationUS <= 0 {
		return 0
	}
	return float64(r.Requests) / (float64(r.DurationUS) / 1e6)
}

// SocketErrors counts connect, read, write errors and timeouts.
func (r wrkResult) SocketErrors() int64 { return r.Connect + r.Read + r.Write + r.Timeout }

// Code returns how many responses had status.
func (r wrkResult) Code(status int) int64 { return r.Codes[strconv.Itoa(status)] }

// runWrk runs wrk once; tmp holds its script file.
func runWrk(ctx context.Context, tmp string, l load) (wrkResult, error) {
	f, err := os.CreateTemp(tmp, "wrk-*.lua")
	if err != nil {
		return wrkResult{}, err
	}
	if _, err := f.WriteString(l.script); err != nil {
		f.Close()
		return wrkResult{}, err
	}
	if err := f.Close(); err != nil {
		return wrkResult{}, err
	}
	defer os.Remove(f.Name())

	args := []string{
		"-t", strconv.Itoa(l.threads), "-c", strconv.Itoa(l.conns),
		"-d", fmt.Sprintf("%ds", int(l.duration.Round(time.Second)/time.Second)),
		"--timeout", "2s", "-s", filepath.Clean(f.Name()),
	}
	if l.header != "" {
		args = append(args, "-H", l.header)
	}
	args = append(args, l.url)
	cmd := exec.CommandContext(ctx, "wrk", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return wrkResult{}, ctx.Err()
		}
		return wrkResult{}, fmt.Errorf("wrk %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "BENCH ")
		if !ok {
			continue
		}
		var r wrkResult
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return wrkResult{}, fmt.Errorf("wrk report %q: %w", line, err)
		}
		return r, nil
	}
	return wrkResult{}, fmt.Errorf("wrk printed no report:\n%s", out.String())
}
