package main

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/redis/rueidis"

	"pesto/shared/wire"
)

// A key's rate beside its monthly quota (wire.Rate): at most Count calls in
// any window of Per, and, with a Burst, at most Burst of them at once, then
// one every Per/Count. It is checked in Redis, in the same script call and
// round trip as the monthly count (counterScript), so that it is exact
// across replicas and a call it refuses spends no monthly quota.
//
// The window of an email's calls in a month is a field of a hash, named by
// its monthly counter's key; the windows of a batch's counters share one
// hash (rateWindowsKey), read with one HMGET and written with one HSET by
// the script that counts them: a field a command is far cheaper than a key
// a command (make bench). A window is written only by a call let through.
// It holds the calls let through in the last window as runs, at most one
// per twentieth of the window, each with the time of its latest call: a
// call counts until that time plus the window, never less than its own, so
// within any window of Per at most Count calls are let through, exactly; a
// call may be refused at most a twentieth of the window (50 ms of a
// second) before a log of every call would let it in, and Retry-After says
// when it is. The burst is a generic cell rate: a debt of Per/Count a call, paid
// back as time passes, at most Burst calls deep. A window whose calls have
// all left it is stale: one in 16 of the scripts that write a hash deletes
// the stale windows among two of its fields drawn at random, and the hash
// expires a minute after its last write.

// rateWindowsKey is the hash of the rate windows of a group of the group
// commit (groupCommit, redisCounter.groupOf): pesto:rate:{<tag>}, the tag a
// string in the group's Redis Cluster slot (a script's keys must share
// one); on a single Redis, one hash for all.
func rateWindowsKey(group uint16) string { return windowsKeys.of(group) }

// windowsKeys keeps the name of each group's hash of windows: at most one
// per slot, 16384.
var windowsKeys = &windowsKeyCache{keys: map[uint16]string{}}

type windowsKeyCache struct {
	mu   sync.Mutex
	keys map[uint16]string
}

func (c *windowsKeyCache) of(slot uint16) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	key, ok := c.keys[slot]
	if !ok {
		key = wire.OwnPrefix + "rate:{" + slotTag(slot) + "}"
		c.keys[slot] = key
	}
	return key
}

// rateArg is the script's argument of a rate: "<count>:<window in
// microseconds>:<burst>", "" for none (rate_of reads it). Those of the
// first maxRateArgsKept rates asked for are kept, so that a call formats
// none.
func rateArg(r wire.Rate) string {
	if !r.On() {
		return ""
	}
	if a, ok := rateArgsKept.Load(r); ok {
		return a.(string)
	}
	a := strconv.FormatInt(r.Count, 10) + ":" + strconv.FormatInt(r.Per.Microseconds(), 10) + ":" + strconv.FormatInt(r.BurstOrCount(), 10)
	if rateArgsKeptN.Add(1) <= maxRateArgsKept {
		rateArgsKept.Store(r, a)
	}
	return a
}

// The arguments of the rates in use: the default and the records' own, a
// few (wire.Rate → string), at most maxRateArgsKept.
var (
	rateArgsKept  sync.Map
	rateArgsKeptN atomic.Int64
)

const maxRateArgsKept = 256

// rateLua is the window of a key's rate, in the Lua of the scripts that
// use it (counterScript checks and spends it, rateInfoScript reads it).
// Times are microseconds of Redis's clock. A window's state is
//
//	struct '>ddddd': the time it was written, its window, the burst's debt then, the calls in its runs, the time of its last run
//	then runs of '>dd', oldest first: the time of the run's latest call, the calls in it
//
// rate_of reads a rate's argument (rateArg), once per script and argument:
// {count, window, burst}, or false for none. rate_open reads a state into
// an array of its numbers w (one struct call) and returns it with the
// index of its first run still in the window, the debt now and the calls
// in the window; rate_room is how many calls may go now; rate_spend lets
// n through and returns the new state (one struct call), the debt and the
// calls; rate_wait is the time until rate_room grows (when it is 0: until
// the next call may go); rate_stale tells a state whose calls have all
// left it. A state is read and written whole, with as few strings made as
// can be: this runs for every call with a rate.
const rateLua = `
local rate_args = {}
local function rate_of(arg)
  local r = rate_args[arg]
  if r == nil then
    r = false
    local count, per, burst = string.match(arg, '^(%d+):(%d+):(%d+)$')
    if count then r = {tonumber(count), tonumber(per), tonumber(burst)} end
    rate_args[arg] = r
  end
  return r
end

local rate_formats = {}
local function rate_format(runs)
  local f = rate_formats[runs]
  if not f then
    f = '>ddddd' .. string.rep('dd', runs)
    rate_formats[runs] = f
  end
  return f
end

local function rate_open(state, now, per)
  local w
  if state and #state >= 56 and (#state - 40) % 16 == 0 then
    w = {struct.unpack(rate_format((#state - 40) / 16), state)}
    w[#w] = nil -- struct.unpack's next position
  else
    w = {now, per, 0, 0, 0}
  end
  local first, total, horizon, last = 6, w[4], now - per, #w - 1
  while first <= last and w[first] <= horizon do
    total = total - w[first + 1]
    first = first + 2
  end
  local debt = w[3] - (now - w[1])
  if debt < 0 then debt = 0 end
  return w, first, debt, total
end

local function rate_tokens(debt, count, per, burst)
  if burst >= count then return count end
  local tokens = math.floor(burst - debt * count / per + 1e-9)
  if tokens < 0 then return 0 end
  return tokens
end

local function rate_room(debt, total, count, per, burst)
  local room = count - total
  if burst < count then room = math.min(room, rate_tokens(debt, count, per, burst)) end
  if room < 0 then return 0 end
  return room
end

local function rate_spend(w, first, debt, total, n, now, count, per, burst)
  local last = #w - 1
  if last >= first and math.floor(w[last] * 20 / per) >= math.floor(now * 20 / per) then
    if now > w[last] then w[last] = now end
    w[last + 1] = w[last + 1] + n
  else
    last = math.max(last + 2, first)
    w[last], w[last + 1] = now, n
  end
  total = total + n
  if burst < count then debt = debt + n * per / count end
  return struct.pack(rate_format((last - first) / 2 + 1), now, per, debt, total, w[last], unpack(w, first, last + 1)), debt, total
end

local function rate_stale(state, now)
  local written, per = struct.unpack('>dd', state)
  return now > written + per
end

local function rate_wait(w, first, debt, total, now, count, per, burst)
  local window = 0
  if total > 0 then
    local need, leaving = total - count + 1, 0
    for i = first, #w - 1, 2 do
      leaving = leaving + w[i + 1]
      if leaving >= need then
        window = w[i] + per - now
        break
      end
    end
  end
  if burst >= count then return math.ceil(window) end
  local tokens = rate_tokens(debt, count, per, burst)
  local cell = 0
  if tokens < burst then cell = debt - (burst - tokens - 1) * per / count end
  local by_window = count - total
  if by_window < tokens then return math.ceil(window) end
  if tokens < by_window then return math.ceil(cell) end
  return math.ceil(math.max(window, cell))
end
`

// rateInfoScript reads a rate's window without spending it: KEYS the hash
// of windows; ARGV the window's field (the counter's key), then the rate
// (rateArg). Returns {room, microseconds until room grows}.
var rateInfoScript = rueidis.NewLuaScript(rateLua + `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local count, per, burst = unpack(rate_of(ARGV[2]))
local w, first, debt, total = rate_open(redis.call('HGET', KEYS[1], ARGV[1]), now, per)
return {rate_room(debt, total, count, per, burst), rate_wait(w, first, debt, total, now, count, per, burst)}
`)

// windowsTTL is how long, in milliseconds, a hash of windows outlives its
// last write: the longest window (a minute) and a little more.
const windowsTTL = "61000"
