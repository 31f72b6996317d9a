package main

import (
	"cmp"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"pesto/shared/wire"
)

// A key's rate beside its monthly quota (wire.Rate): at most Count calls in
// any window of Per, and, with a Burst, at most Burst of them at once, then
// one every Per/Count. It is checked in Redis, in the same round trip as the
// monthly count, so that it is exact across replicas, and a call it refuses
// spends no monthly quota.
//
// The window of an email's calls in a month is a Redis hash of its own,
// named by the month's counter (rateWindowKey). A call's time is when auth
// counts it, by the replica's clock (replicas on one host share it), and its
// slot that time in twentieths of Per (50 ms of a second) since the epoch.
// Per slot with calls the hash holds the calls counterScript let through in
// field "<slot>" and the latest of their times in "<slot>t"; and each
// replica's calls counted with plain commands in a field of its own,
// "p<id>", for its slots of the last window and a half, oldest first, which
// it alone writes, whole (ownCalls.field: "<slot>:<calls>:<offset>", then
// "<slots after the one before>:<calls>:<offset>" for each later slot,
// comma-separated; the offset is the latest call's time into its slot, in
// microseconds, so that a key called a few times a second keeps a field of a
// few dozen bytes, which Redis keeps in its compact listpack form). A call
// at time x counts the slots after x-Per's, and x-Per's own when its latest
// call is after x-Per: every call of the last Per and none older than a
// slot, so that within any window of Per at most Count calls are let
// through, exactly; Retry-After is when the oldest of them leave it (their
// slot's latest time plus Per). Slots up to a window after x's are counted
// too: the calls of replicas whose batch reached Redis first. A field "b"
// holds the burst's theoretical arrival time (a generic cell rate, Unix
// microseconds), when the rate has a burst.
//
// Far below its rate (rateFarBelow) a key is counted with plain commands in
// the batch's round trip: HSET of this replica's field, then HGETALL of the
// window, which holds every call counted before these (and perhaps some
// counted just after: never fewer); the rare excess is given back at once.
// Near its rate, or with a burst, it is counted by counterScript, which
// writes nothing for a refused call. The script's fields out of the slots a
// call may still count (rateKeep) are deleted once a window holds more than
// rateMaxFields, a replica's field once all its slots are.
//
// A window outlives its last expiry push by three windows and a slot
// (rateWindowMillis). The script pushes it on every call it lets through; a
// replica counting with plain commands pushes it only when its own last push
// is a window and a quarter old or more (ratePushDue), so that a key called
// often costs one PEXPIRE a window and a quarter, not one a call: the calls
// it writes meanwhile still outlive every window that counts them (a window
// and a slot) by three quarters of a window, and its field, whose newest
// slot is then younger than rateKeep, is never taken for stale, so the hash
// is never emptied under it. A field HSET had to create when no push was due
// (an operator deleted the window) gets its expiry at once.

// rateSlots is the slots of a window; a call counts the slots of the last
// window and those up to a window after its own.
const rateSlots = 20

// rateKeep is how many slots either side of a call's own are kept: the
// window, and half a window more for the calls that reach Redis late (a
// batch held up by a stalled Redis).
const rateKeep = rateSlots + rateSlots/2

// rateMaxFields is how many fields a window may hold before those out of
// rateKeep are deleted.
const rateMaxFields = 64

// rateBurstField is the field of the burst's theoretical arrival time.
const rateBurstField = "b"

// rateWindowKey is the hash of the rate window of the counter
// counterKey: pesto:rate:<counter>, and on a Redis Cluster
// pesto:rate:{<tag>}<counter>, the tag a string in the counter's slot (a
// script's keys must share one).
func rateWindowKey(counterKey string, cluster bool) string {
	if !cluster {
		return wire.OwnPrefix + "rate:" + counterKey
	}
	return wire.OwnPrefix + "rate:{" + slotTags.of(hashSlot(counterKey)) + "}" + counterKey
}

// slotTags keeps the tag of each Redis Cluster slot: at most 16384.
var slotTags = &slotTagCache{tags: map[uint16]string{}}

type slotTagCache struct {
	mu   sync.Mutex
	tags map[uint16]string
}

func (c *slotTagCache) of(slot uint16) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	tag, ok := c.tags[slot]
	if !ok {
		tag = slotTag(slot)
		c.tags[slot] = tag
	}
	return tag
}

// rateSlotOf is the slot of the time at (Unix microseconds) under rate r.
func rateSlotOf(r wire.Rate, at int64) int64 { return at / rateSlotMicros(r) }

// rateSlotMicros is the length of r's slot in microseconds.
func rateSlotMicros(r wire.Rate) int64 { return r.Per.Microseconds() / rateSlots }

// rateLifeWindows is how many windows (and a slot) a window outlives its
// last expiry push, in Go and in the script: past every slot a call written
// up to ratePushEvery after the push may count.
const rateLifeWindows = 3

// rateWindowMillis is how long a window outlives its last expiry push, in
// milliseconds (rateLifeWindows).
func rateWindowMillis(r wire.Rate) int64 {
	return (rateLifeWindows*r.Per + r.Per/rateSlots).Milliseconds()
}

// ratePushEvery is how long after its last expiry push a replica writes a
// window without pushing its expiry again: a window and a quarter.
func ratePushEvery(r wire.Rate) int64 { return (r.Per + r.Per/4).Microseconds() }

// ratePushDue reports whether a replica that last pushed a window's expiry
// at pushed (Unix microseconds; 0: never, or not known), and whose field
// of it held own, pushes it with its write at now: a push interval after
// the last, or a write that makes the field (none of own's slots within
// rateKeep), which may make the window.
func ratePushDue(r wire.Rate, pushed int64, own ownCalls, now int64) bool {
	return pushed == 0 || now-pushed >= ratePushEvery(r) || now < pushed ||
		len(own) == 0 || own[len(own)-1].slot < rateSlotOf(r, now)-rateKeep
}

// rateFarBelow reports whether n calls on a window last seen holding seen
// calls may be counted with plain commands: the rate has no burst, and even
// with the other replicas' calls since then (up to an eighth of the rate)
// they stay within it.
func rateFarBelow(r wire.Rate, seen, n int64) bool {
	return r.Burst == 0 && seen+n <= r.Count-r.Count/8
}

// window is a rate window as read from Redis, for a call at now: the calls
// of the slots it counts and the latest of their times, oldest first (slot
// t-rateSlots first), and the burst's theoretical arrival time.
type window struct {
	t, now, per int64 // now's slot; now and Per in microseconds
	// present is the latest time known: now, or a later call's that
	// another replica counted first (a time taken before this reply).
	present int64
	calls   [2*rateSlots + 1]int64
	latest  [2*rateSlots + 1]int64
	total   int64
	tat     int64 // 0: none
	stale   []string
}

// readWindow reads a window's fields (HGETALL) for a call at now (Unix
// microseconds). The fields that no call counts any more are listed in
// stale: the script's fields out of rateKeep, when there are more than
// rateMaxFields; a replica's whose slots all are. A field that names no
// slot is ignored.
func readWindow(fields map[string]string, r wire.Rate, now int64) window {
	w := window{t: rateSlotOf(r, now), now: now, per: r.Per.Microseconds()}
	for name, v := range fields {
		switch {
		case name == rateBurstField:
			w.tat, _ = strconv.ParseInt(v, 10, 64)
		case name != "" && name[0] == 'p':
			if !w.addOwnField(v) {
				w.stale = append(w.stale, name)
			}
		default:
			w.addScriptField(name, v, len(fields) > rateMaxFields)
		}
	}
	w.settle(r)
	return w
}

// addScriptField adds the script's field name ("<slot>" or "<slot>t") of
// value v; out of rateKeep it is stale when many is set.
func (w *window) addScriptField(name, v string, many bool) {
	digits := 0
	for digits < len(name) && name[digits] >= '0' && name[digits] <= '9' {
		digits++
	}
	u, err := strconv.ParseInt(name[:digits], 10, 64)
	if err != nil {
		return
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return
	}
	switch d := u - w.t + rateSlots; {
	case d >= 0 && d <= 2*rateSlots:
		switch name[digits:] {
		case "t":
			w.latest[d] = max(w.latest[d], n)
		case "":
			w.calls[d] += n
		}
	case many && (d < rateSlots-rateKeep || d > rateSlots+rateKeep):
		w.stale = append(w.stale, name)
	}
}

// addOwnField adds a replica's field (ownCalls.field), and reports
// whether any of its slots is still kept (rateKeep). An item that is not
// three numbers ends the field.
func (w *window) addOwnField(v string) (kept bool) {
	slotLen := w.per / rateSlots
	for u := int64(-1); len(v) > 0; {
		var step, n, off int64
		var ok bool
		if step, v, ok = cutNumber(v, ':'); !ok {
			break
		}
		if n, v, ok = cutNumber(v, ':'); !ok {
			break
		}
		if off, v, ok = cutNumber(v, ','); !ok {
			break
		}
		if u < 0 {
			u = step
		} else {
			u += step
		}
		l := u*slotLen + off
		d := u - w.t + rateSlots
		kept = kept || d >= rateSlots-rateKeep && d <= rateSlots+rateKeep
		if d >= 0 && d <= 2*rateSlots {
			w.calls[d] += n
			w.latest[d] = max(w.latest[d], l)
		}
	}
	return kept
}

// cutNumber reads the decimal number (1 to 18 digits) at the start of v,
// then sep or the end: the number and what follows sep.
func cutNumber(v string, sep byte) (n int64, rest string, ok bool) {
	i := 0
	for ; i < len(v) && i < 18 && v[i] >= '0' && v[i] <= '9'; i++ {
		n = n*10 + int64(v[i]-'0')
	}
	switch {
	case i == 0:
		return 0, "", false
	case i == len(v):
		return n, "", true
	case v[i] == sep:
		return n, v[i+1:], true
	}
	return 0, "", false
}

// ownSlot is the calls a replica counted with plain commands in one slot of
// a window, and the latest of their times.
type ownSlot struct{ slot, calls, latest int64 }

// ownCalls is a replica's plain calls of one window, oldest slot first: its
// field's value (field).
type ownCalls []ownSlot

// add returns o with n more calls (fewer when negative) in slot t at time
// now, in slot order, without the slots older than rateKeep before t (a
// later slot stays: a batch whose time was taken late, or a clock set back,
// adds an older slot while the newer ones still count); o itself is left as
// it was.
func (o ownCalls) add(t, n, now int64) ownCalls {
	out := make(ownCalls, 0, len(o)+1)
	cur := ownSlot{slot: t, calls: n, latest: now}
	for _, s := range o {
		switch {
		case s.slot == t:
			cur.calls, cur.latest = s.calls+n, max(s.latest, now)
		case s.slot >= t-rateKeep:
			out = append(out, s)
		}
	}
	i, _ := slices.BinarySearchFunc(out, t, func(s ownSlot, t int64) int { return cmp.Compare(s.slot, t) })
	return slices.Insert(out, i, cur)
}

// field is o as its field's value, for slots of slotLen microseconds:
// "<slot>:<calls>:<offset>" for the oldest slot, then
// ",<slots after the one before>:<calls>:<offset>" for each later one, the
// offset the latest call's time into its slot.
func (o ownCalls) field(slotLen int64) string {
	var b strings.Builder
	b.Grow(12 + 12*len(o))
	var num [20]byte
	prev := int64(0)
	for i, s := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(strconv.AppendInt(num[:0], s.slot-prev, 10))
		b.WriteByte(':')
		b.Write(strconv.AppendInt(num[:0], s.calls, 10))
		b.WriteByte(':')
		b.Write(strconv.AppendInt(num[:0], min(max(s.latest-s.slot*slotLen, 0), slotLen-1), 10))
		prev = s.slot
	}
	return b.String()
}

// settle gives each slot with calls of unknown times its end for their
// time, drops x-Per's slot when its calls are all older than Per, and sums
// the rest.
func (w *window) settle(r wire.Rate) {
	w.present = w.now
	for _, l := range w.latest {
		w.present = max(w.present, l)
	}
	slot := rateSlotMicros(r)
	for i, c := range w.calls {
		if c > 0 && w.latest[i] == 0 {
			w.latest[i] = (w.t-rateSlots+int64(i)+1)*slot - 1
		}
	}
	if w.latest[0] <= w.now-w.per { // x-Per's slot, its calls all older than Per
		w.calls[0] = 0
	}
	w.total = 0
	for _, c := range w.calls {
		w.total += c
	}
}

// room is how many calls r lets through now on w.
func (w *window) room(r wire.Rate) int64 {
	room := max(r.Count-w.total, 0)
	if r.Burst > 0 {
		room = min(room, w.burstRoom(r))
	}
	return room
}

// burstRoom is how many calls the burst lets through now: B·T of credit,
// less what the theoretical arrival time is ahead of now, in cells of T.
func (w *window) burstRoom(r wire.Rate) int64 {
	cell := float64(w.per) / float64(r.Count)
	ahead := max(w.tat-w.now, 0)
	return min(r.Burst, max(int64(math.Floor((float64(r.Burst)*cell-float64(ahead))/cell+1e-9)), 0))
}

// wait is how long until r lets more through on w than now: for a window
// with no room, until the next call may go.
func (w *window) wait(r wire.Rate) time.Duration {
	byWindow := w.windowWait(r)
	if r.Burst == 0 {
		return byWindow
	}
	cell := float64(w.per) / float64(r.Count)
	tokens := w.burstRoom(r)
	var byBurst time.Duration
	if tokens < r.Burst {
		// The next cell frees up when the arrival time is B-tokens-1 cells ahead.
		at := float64(w.tat) - float64(r.Burst-tokens-1)*cell - float64(w.now)
		byBurst = time.Duration(math.Ceil(at)) * time.Microsecond
	}
	switch windowRoom := max(r.Count-w.total, 0); {
	case windowRoom < tokens:
		return byWindow
	case tokens < windowRoom:
		return byBurst
	}
	return max(byWindow, byBurst)
}

// windowWait is how long until the window's room grows: until its oldest
// calls leave it (their slot's latest time plus Per), as many as it takes
// to make room for one, from the present (a call that waits that long from
// its answer is counted at a time later still).
func (w *window) windowWait(r wire.Rate) time.Duration {
	if w.total == 0 {
		return 0
	}
	need, left := max(w.total-r.Count+1, 1), int64(0)
	for i, c := range w.calls {
		if left += c; left >= need {
			return time.Duration(max(w.latest[i]+w.per-w.present, 0)) * time.Microsecond
		}
	}
	return 0
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

// rateLua is the window of a key's rate in counterScript's Lua, the same
// arithmetic as window's methods (TestRateLuaMatchesGo). Times are Unix
// microseconds by the replica's clock (ARGV).
//
// rate_of reads a rate's argument (rateArg), once per script and argument:
// {count, window, burst}, or false for none. rate_read reads a window
// (HGETALL) for a call at now into {t, calls and latest (slot
// offset →), total, tat}, deleting the fields out of the kept slots once
// there are too many; rate_room is how many calls may go now; rate_spend
// lets n through (HINCRBY of the slot's calls, its latest time, and the
// arrival time with a burst); rate_wait is the time until rate_room grows
// (when it is 0: until the next call may go).
var rateLua = `
local rate_slots, rate_keep, rate_max_fields, rate_life_windows = ` + strconv.Itoa(rateSlots) + `, ` + strconv.Itoa(rateKeep) + `, ` + strconv.Itoa(rateMaxFields) + `, ` + strconv.Itoa(rateLifeWindows) + `
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

local function rate_settle(w)
  w.present = w.now
  for d = -rate_slots, rate_slots do w.present = math.max(w.present, w.latest[d]) end
  local slot = w.per / rate_slots
  for d = -rate_slots, rate_slots do
    if w.calls[d] > 0 and w.latest[d] == 0 then w.latest[d] = (w.t + d + 1) * slot - 1 end
  end
  if w.latest[-rate_slots] <= w.now - w.per then w.calls[-rate_slots] = 0 end
  w.total = 0
  for d = -rate_slots, rate_slots do w.total = w.total + w.calls[d] end
end

local function rate_read(h, now, per)
  local w = {t = math.floor(now / (per / rate_slots)), now = now, per = per, calls = {}, latest = {}, total = 0, tat = 0}
  for d = -rate_slots, rate_slots do w.calls[d], w.latest[d] = 0, 0 end
  local all = redis.call('HGETALL', h)
  local stale = {}
  for j = 1, #all, 2 do
    local name, value = all[j], all[j + 1]
    if name == 'b' then
      w.tat = tonumber(value) or 0
    elseif string.sub(name, 1, 1) == 'p' then
      local kept, slot = false, nil
      for step, calls, offset in string.gmatch(value, '(%d+):(%d+):(%d+)') do
        if slot == nil then slot = tonumber(step) else slot = slot + tonumber(step) end
        local d = slot - w.t
        if d >= -rate_keep and d <= rate_keep then kept = true end
        if d >= -rate_slots and d <= rate_slots then
          w.calls[d] = w.calls[d] + tonumber(calls)
          w.latest[d] = math.max(w.latest[d], slot * (per / rate_slots) + tonumber(offset))
        end
      end
      if not kept then stale[#stale + 1] = name end
    else
      local digits, kind = string.match(name, '^(%d+)(.*)$')
      local u, v = tonumber(digits), tonumber(value)
      if u and v then
        local d = u - w.t
        if d >= -rate_slots and d <= rate_slots then
          if kind == 't' then w.latest[d] = math.max(w.latest[d], v)
          elseif kind == '' then w.calls[d] = w.calls[d] + v end
        elseif #all > 2 * rate_max_fields and (d < -rate_keep or d > rate_keep) then
          stale[#stale + 1] = name
        end
      end
    end
  end
  if #stale > 0 then redis.call('HDEL', h, unpack(stale)) end
  rate_settle(w)
  return w
end

local function rate_burst_room(w, count, burst)
  local cell = w.per / count
  local ahead = math.max(w.tat - w.now, 0)
  return math.min(burst, math.max(math.floor((burst * cell - ahead) / cell + 1e-9), 0))
end

local function rate_room(w, count, burst)
  local room = math.max(count - w.total, 0)
  if burst < count then room = math.min(room, rate_burst_room(w, count, burst)) end
  return room
end

local function rate_spend(h, w, n, count, burst)
  local slot = string.format('%.0f', w.t)
  redis.call('HINCRBY', h, slot, n)
  w.calls[0] = w.calls[0] + n
  w.total = w.total + n
  if w.latest[0] < w.now then
    w.latest[0] = w.now
    redis.call('HSET', h, slot .. 't', string.format('%.0f', w.now))
  end
  if burst < count then
    w.tat = math.ceil(math.max(w.tat, w.now) + n * w.per / count)
    redis.call('HSET', h, 'b', string.format('%.0f', w.tat))
  end
  redis.call('PEXPIRE', h, string.format('%.0f', math.floor((rate_life_windows * w.per + w.per / rate_slots) / 1000)))
end

local function rate_window_wait(w, count)
  if w.total == 0 then return 0 end
  local need, left = math.max(w.total - count + 1, 1), 0
  for d = -rate_slots, rate_slots do
    left = left + w.calls[d]
    if left >= need then return math.max(w.latest[d] + w.per - w.present, 0) end
  end
  return 0
end

local function rate_wait(w, count, burst)
  local by_window = rate_window_wait(w, count)
  if burst >= count then return by_window end
  local cell = w.per / count
  local tokens = rate_burst_room(w, count, burst)
  local by_burst = 0
  if tokens < burst then by_burst = math.ceil(w.tat - (burst - tokens - 1) * cell - w.now) end
  local window_room = math.max(count - w.total, 0)
  if window_room < tokens then return by_window end
  if tokens < window_room then return by_burst end
  return math.max(by_window, by_burst)
end
`
