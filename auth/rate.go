package main

import (
	"strconv"
	"strings"
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
// The window of an email's calls in a month lives under rateKey of its
// monthly counter: one string, written only by a call that is let through,
// that expires once the window is empty. It holds the calls let through in
// the last window as runs, at most one per hundredth of the window, each
// with the time of its latest call: a call counts until that time plus the
// window, never less than its own, so within any window of Per at most
// Count calls are let through, exactly; a call may be refused at most a
// hundredth of the window (10 ms of a second) before a log of every call
// would let it in, and Retry-After says when it is. The burst is a generic
// cell rate: a debt of Per/Count a call, paid back as time passes, at most
// Burst calls deep.

// rateKeyPrefix starts the key of an email's rate window.
const rateKeyPrefix = wire.OwnPrefix + "rate:"

// rateKey is the key of the rate window of the calls counted on the monthly
// counter counterKey: pesto:rate:{<counter key>}, in the counter's Redis
// Cluster slot (a script's keys must share one). A counter key whose
// hashed part holds a '}' (an email with braces) cannot be a hash tag: its
// window is pesto:rate:{<a tag of the same slot>}<counter key>.
func rateKey(counterKey string) string {
	tag := hashTagOf(counterKey)
	if strings.IndexByte(tag, '}') < 0 {
		return rateKeyPrefix + "{" + tag + "}"
	}
	return rateKeyPrefix + "{" + slotTags.of(hashSlot(tag)) + "}" + counterKey
}

// hashTagOf is the part of key that Redis Cluster hashes: its hash tag when
// it has a non-empty one, else the whole key.
func hashTagOf(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// slotTags finds, for a slot, the first of "0", "1", … (base 36) that Redis
// Cluster hashes to it; the same on every replica. Found once per slot.
var slotTags = &slotTagCache{tags: map[uint16]string{}}

type slotTagCache struct {
	mu   sync.Mutex
	tags map[uint16]string // at most one per slot: 16384
}

func (c *slotTagCache) of(slot uint16) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if tag, ok := c.tags[slot]; ok {
		return tag
	}
	for n := int64(0); ; n++ {
		if tag := strconv.FormatInt(n, 36); hashSlot(tag) == slot {
			c.tags[slot] = tag
			return tag
		}
	}
}

// rateArgs are the script's arguments of a rate: its count, its window in
// microseconds and its burst; three zeros for none. Those of the first
// rateArgsKept rates asked for are kept, so that a call formats none.
func rateArgs(r wire.Rate) (count, per, burst string) {
	if !r.On() {
		return "0", "0", "0"
	}
	if a, ok := rateArgsKept.Load(r); ok {
		a := a.(*[3]string)
		return a[0], a[1], a[2]
	}
	a := [3]string{strconv.FormatInt(r.Count, 10), strconv.FormatInt(r.Per.Microseconds(), 10), strconv.FormatInt(r.BurstOrCount(), 10)}
	if rateArgsKeptN.Add(1) <= maxRateArgsKept {
		rateArgsKept.Store(r, &a)
	}
	return a[0], a[1], a[2]
}

// The arguments of the rates in use: the default and the records' own, a
// few (wire.Rate → *[3]string), at most maxRateArgsKept.
var (
	rateArgsKept  sync.Map
	rateArgsKeptN atomic.Int64
)

const maxRateArgsKept = 256

// rateLua is the window of a key's rate, in the Lua of the scripts that
// use it (counterScript checks and spends it, rateInfoScript reads it).
// Times are microseconds of Redis's clock. A window's state is
//
//	struct '>ddd': the time it was written, the burst's debt then (µs), the calls in its runs
//	then runs of '>dd', oldest first: the time of the run's latest call, the calls in it
//
// rate_open drops the runs that have left the window; rate_room is how many
// calls may go now; rate_spend lets n through and returns the new state;
// rate_wait is the time until rate_room grows (when it is 0: until the next
// call may go).
const rateLua = `
local function rate_open(state, now, per)
  local w = {debt = 0, total = 0, runs = ''}
  if not state then return w end
  local written, debt, total = struct.unpack('>ddd', state)
  local pos = 25
  while pos <= #state do
    local t, c = struct.unpack('>dd', state, pos)
    if t > now - per then break end
    total = total - c
    pos = pos + 16
  end
  w.debt = math.max(debt - (now - written), 0)
  w.total = total
  w.runs = string.sub(state, pos)
  return w
end

local function rate_tokens(w, count, per, burst)
  if burst >= count then return count end
  return math.max(math.floor(burst - w.debt * count / per + 1e-9), 0)
end

local function rate_room(w, count, per, burst)
  return math.max(math.min(count - w.total, rate_tokens(w, count, per, burst)), 0)
end

local function rate_spend(w, n, now, count, per, burst)
  local hundredth = per / 100
  local last = #w.runs - 15
  local lt, lc = 0, 0
  if last >= 1 then lt, lc = struct.unpack('>dd', w.runs, last) end
  if last >= 1 and math.floor(lt / hundredth) >= math.floor(now / hundredth) then
    w.runs = string.sub(w.runs, 1, last - 1) .. struct.pack('>dd', math.max(lt, now), lc + n)
  else
    w.runs = w.runs .. struct.pack('>dd', now, n)
  end
  w.total = w.total + n
  if burst < count then w.debt = w.debt + n * per / count end
  return struct.pack('>ddd', now, w.debt, w.total) .. w.runs
end

local function rate_wait(w, now, count, per, burst)
  local window = 0
  local need = math.max(w.total - count + 1, 1)
  local leaving, pos = 0, 1
  while pos <= #w.runs do
    local t, c = struct.unpack('>dd', w.runs, pos)
    leaving = leaving + c
    if leaving >= need then
      window = t + per - now
      break
    end
    pos = pos + 16
  end
  if burst >= count then return math.ceil(window) end
  local tokens = rate_tokens(w, count, per, burst)
  local cell = 0
  if tokens < burst then cell = w.debt - (burst - tokens - 1) * per / count end
  local by_window, by_cell = count - w.total, tokens
  if by_window < by_cell then return math.ceil(window) end
  if by_cell < by_window then return math.ceil(cell) end
  return math.ceil(math.max(window, cell))
end
`

// rateInfoScript reads a rate's window without spending it: KEYS the
// window; ARGV the rate (rateArgs). Returns {room, microseconds until room
// grows}.
var rateInfoScript = rueidis.NewLuaScript(rateLua + `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local count, per, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local w = rate_open(redis.call('GET', KEYS[1]), now, per)
return {rate_room(w, count, per, burst), rate_wait(w, now, count, per, burst)}
`)
