package main

import (
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"pesto/shared/redisconn"
	"pesto/shared/wire"
)

// redisCounter counts calls in Redis, on the counting connection: the count
// and refund functions of the group commit (groupCommit), and the queue of each
// counter (groupOf). It remembers the value each counter had in its last
// reply (seen), to count one well below its limit with a plain INCRBY.
type redisCounter struct {
	conn   *redisconn.Conn // the counting connection (counterOptions)
	log    *slog.Logger
	onLost func(key string, n int64, err error) // a refund that failed

	seenMu   sync.Mutex
	seen     map[uint64]int64 // seenHash of a counter key → its value in the last reply
	seenSeed maphash.Seed
}

func newRedisCounter(conn *redisconn.Conn, log *slog.Logger) *redisCounter {
	return &redisCounter{conn: conn, log: log, seen: map[uint64]int64{}, seenSeed: maphash.MakeSeed(),
		onLost: func(_ string, n int64, err error) {
			log.Error("refund of calls not answered 200 failed: the counter keeps them", "calls", n, "err", err.Error())
		}}
}

// counterScript counts batches of calls, many counters in one call. Per
// counter it grants min(n, limit - used) calls, or none (and writes
// nothing) when the limit is reached, so that a limit of N allows exactly N
// calls whatever the number of racing callers and replicas. The TTL is set
// when the counter is created, never pushed forward; the value stays the
// decimal count the old services read. A counter whose calls carry a rate
// (rate.go) grants no more than its window lets through now, and spends
// the window only on calls it grants: a call refused by either limit
// writes nothing. Past the deadline (Unix microseconds by Redis's clock; 0:
// none) it counts nothing and returns an empty array.
//
// KEYS: the counters, then, when any of their calls carry a rate, the hash
// of their windows (rateWindowsKey). ARGV: the deadline, the counters'
// TTL, the hash's, then per counter its limit, its calls, and its rate
// (rateArg). Returns per counter {used before, granted, the window's room
// before (-1: no rate), microseconds until its room grows after}. Numbers
// that repeat (limits, calls) are read once a script.
var counterScript = rueidis.NewLuaScript(rateLua + `
local deadline_us = tonumber(ARGV[1])
local ttl_seconds, windows_ttl = ARGV[2], ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if deadline_us > 0 and now > deadline_us then
  return {}
end
local counters_n = (#ARGV - 3) / 3
local numbers = {}
local function number(s)
  local v = numbers[s]
  if v == nil then
    v = tonumber(s)
    numbers[s] = v
  end
  return v
end
local windows_key = KEYS[counters_n + 1]
-- Every counter read in one MGET, every window in one HMGET (in chunks:
-- unpack has a stack limit).
local values = {}
for first = 1, counters_n, 200 do
  local got = redis.call('MGET', unpack(KEYS, first, math.min(first + 199, counters_n)))
  for j = 1, #got do values[first + j - 1] = got[j] end
end
local states = {}
if windows_key then
  local rated = {}
  for i = 1, counters_n do
    if ARGV[3 + 3 * i] ~= '' then rated[#rated + 1] = i end
  end
  for first = 1, #rated, 200 do
    local fields = {}
    for j = first, math.min(first + 199, #rated) do fields[#fields + 1] = KEYS[rated[j]] end
    local got = redis.call('HMGET', windows_key, unpack(fields))
    for j = 1, #got do states[rated[first + j - 1]] = got[j] end
  end
end
local reply = {}
local added = {} -- calls counted by this script so far, per counter
local windows = {} -- windows spent by this script so far, per counter
local spent = {} -- their names, in order
for i = 1, counters_n do
  local counter_key = KEYS[i]
  local a = 3 * i
  local limit, n, rate = number(ARGV[a + 1]), number(ARGV[a + 2]), rate_of(ARGV[a + 3])
  local used = tonumber(values[i] or '0') + (added[counter_key] or 0)
  local granted = math.max(math.min(n, limit - used), 0)
  local room, wait = -1, 0
  if rate then
    local count, per, burst = rate[1], rate[2], rate[3]
    local state = windows[counter_key]
    if state == nil then state = states[i] end
    local w, first, debt, total = rate_open(state, now, per)
    room = rate_room(debt, total, count, per, burst)
    if room < granted then granted = room end
    if granted > 0 then
      if windows[counter_key] == nil then spent[#spent + 1] = counter_key end
      state, debt, total = rate_spend(w, first, debt, total, granted, now, count, per, burst)
      windows[counter_key] = state
    end
    wait = rate_wait(w, first, debt, total, now, count, per, burst)
  end
  if granted > 0 then
    local after = redis.call('INCRBY', counter_key, granted)
    if after == granted then redis.call('EXPIRE', counter_key, ttl_seconds) end
    added[counter_key] = (added[counter_key] or 0) + granted
  end
  local r = 4 * (i - 1)
  reply[r + 1], reply[r + 2], reply[r + 3], reply[r + 4] = used, granted, room, wait
end
if #spent > 0 then
  for first = 1, #spent, 200 do
    local set = {}
    for j = first, math.min(first + 199, #spent) do
      set[#set + 1] = spent[j]
      set[#set + 1] = windows[spent[j]]
    end
    redis.call('HSET', windows_key, unpack(set))
  end
  redis.call('PEXPIRE', windows_key, windows_ttl)
  if now % 16 == 0 then -- one script in 16, by Redis's clock
    local drawn = redis.call('HRANDFIELD', windows_key, 2, 'WITHVALUES')
    for j = 1, #drawn, 2 do
      if windows[drawn[j]] == nil and (#drawn[j + 1] < 16 or rate_stale(drawn[j + 1], now)) then
        redis.call('HDEL', windows_key, drawn[j])
      end
    end
  end
end
return reply
`)

// refundScript takes back calls that were counted but not answered 200 (a
// reply that came after its callers gave up). A counter gone meanwhile
// (expired, deleted) is left alone.
var refundScript = rueidis.NewLuaScript(`
local counter_key = KEYS[1]
local calls = ARGV[1]
if redis.call('EXISTS', counter_key) == 0 then return 0 end
return redis.call('DECRBY', counter_key, calls)
`)

var counterTTL = strconv.FormatInt(int64(wire.CounterTTL/time.Second), 10)

// countBatch counts the entries of one batch, which share a hash slot, and
// sets their results (or their err). A counter this replica saw well below
// its limit (plainCount) is counted with a plain INCRBY unless its calls
// carry a rate; the others by counterScript; both go out together, in one
// round trip.
func (k *redisCounter) countBatch(ctx context.Context, deadline time.Time, entries []entry) error {
	c, err := k.conn.Client()
	if err != nil {
		return err
	}
	plain := make([]int, 0, len(entries))
	checked := make([]int, 0, len(entries))
	names := make([]uint64, len(entries)) // each counter's name in seen, hashed once
	for i := range entries {
		if !entries[i].pol.rate.On() {
			names[i] = k.seenHash(entries[i].key)
		}
	}
	k.seenMu.Lock()
	for i, e := range entries {
		if used, ok := k.seen[names[i]]; ok && !e.pol.rate.On() && plainCount(used, e.n, e.pol.limit) {
			plain = append(plain, i)
		} else {
			checked = append(checked, i)
		}
	}
	k.seenMu.Unlock()

	var scriptErr error
	switch {
	case len(plain) == 0:
		scriptErr = k.countChecked(ctx, c, deadline, entries, checked)
	case len(checked) == 0:
		k.countPlain(ctx, c, entries, plain)
	default: // both at once: one round trip
		done := make(chan struct{})
		go func() {
			scriptErr = k.countChecked(ctx, c, deadline, entries, checked)
			close(done)
		}()
		k.countPlain(ctx, c, entries, plain)
		<-done
	}
	if scriptErr != nil {
		for _, i := range checked {
			entries[i].err = scriptErr
		}
	}

	k.seenMu.Lock()
	if len(k.seen) >= seenMax {
		clear(k.seen) // a month's worth of counters at most; they are read again
	}
	for i := range entries {
		if e := &entries[i]; e.err == nil && !e.pol.rate.On() {
			k.seen[names[i]] = e.before + e.granted
		}
	}
	k.seenMu.Unlock()
	return nil
}

// seenMax bounds the counters a replica remembers (about 40 bytes each).
const seenMax = 1 << 16

// seenHash names a counter in seen: 8 bytes instead of the key's ~60 (and
// no key kept alive). Two counters whose names collide (among seenMax of
// them, a chance of about 1 in 10^10) at worst share a last-seen value, and
// plainCount then may count the one near its limit with a plain INCRBY:
// still exact (the excess is given back at once), only not write-free for
// a refused call.
func (k *redisCounter) seenHash(key string) uint64 { return maphash.String(k.seenSeed, key) }

// plainCount reports whether n calls on a counter last seen at used may be
// counted with a plain INCRBY: when even with the other replicas' calls
// since then (up to an eighth of the limit) they stay within it. A plain
// INCRBY that does pass the limit is still exact: countPlain gives the
// excess back at once, and the counter is seen at its limit from then on,
// so it is checked by the script, which writes nothing for a refused call.
func plainCount(used, n, limit int64) bool {
	return used+n <= limit-limit/8
}

// countChecked counts the entries at idx with counterScript.
func (k *redisCounter) countChecked(ctx context.Context, c rueidis.Client, deadline time.Time, entries []entry, idx []int) error {
	keys := make([]string, len(idx), len(idx)+1)
	args := make([]string, 3, 3+3*len(idx))
	args[0], args[1], args[2] = "0", counterTTL, windowsTTL
	if !deadline.IsZero() {
		args[0] = strconv.FormatInt(deadline.UnixMicro(), 10)
	}
	rated := false
	for j, i := range idx {
		e := &entries[i]
		keys[j] = e.key
		args = append(args, strconv.FormatInt(e.pol.limit, 10), strconv.FormatInt(e.n, 10), rateArg(e.pol.rate))
		rated = rated || e.pol.rate.On()
	}
	if rated {
		keys = append(keys, rateWindowsKey(k.groupOf(keys[0])))
	}
	reply, err := runCounterScript(ctx, c, keys, args)
	if err != nil {
		return err
	}
	for j, i := range idx {
		if err := reply.at(j, &entries[i]); err != nil {
			return err
		}
	}
	return nil
}

// counterReply is counterScript's answer: for each counter, in order, the
// calls counted before, the calls granted, the rate's room before and the
// microseconds until it grows.
type counterReply []rueidis.RedisMessage

// counterReplyLen is the length of counterScript's answer per counter.
const counterReplyLen = 4

// runCounterScript runs counterScript on keys with args (a deadline, the
// TTLs, then a limit, a number of calls and a rate per counter) and checks
// its answer's shape: errLate when it ran past its deadline and counted
// nothing.
func runCounterScript(ctx context.Context, c rueidis.Client, keys, args []string) (counterReply, error) {
	reply, err := counterScript.Exec(ctx, c, keys, args).ToArray()
	if err != nil {
		return nil, err
	}
	if len(reply) == 0 {
		return nil, errLate
	}
	if counters := (len(args) - 3) / 3; len(reply) != counterReplyLen*counters {
		return nil, fmt.Errorf("counter script: %d values for %d counters", len(reply), counters)
	}
	return reply, nil
}

// at sets e's results from what the script did for the j-th counter.
func (r counterReply) at(j int, e *entry) error {
	var v [counterReplyLen]int64
	for i := range v {
		var err error
		if v[i], err = r[counterReplyLen*j+i].AsInt64(); err != nil {
			return err
		}
	}
	e.before, e.granted, e.room, e.wait = v[0], v[1], v[2], time.Duration(v[3])*time.Microsecond
	return nil
}

// countPlain counts the entries at idx with one INCRBY each. INCRBY's
// answer says what it counted: the calls that fit under the limit are
// granted, the excess is given back at once (a counter that passed its
// limit since this replica last saw it). A counter INCRBY had to create (an
// operator deleted it) gets its TTL right after.
func (k *redisCounter) countPlain(ctx context.Context, c rueidis.Client, entries []entry, idx []int) {
	cmds := make(rueidis.Commands, len(idx))
	for j, i := range idx {
		cmds[j] = c.B().Incrby().Key(entries[i].key).Increment(entries[i].n).Build()
	}
	for j, res := range c.DoMulti(ctx, cmds...) {
		e := &entries[idx[j]]
		after, err := res.AsInt64()
		if err != nil {
			e.err = err
			continue
		}
		e.before = after - e.n
		e.granted = min(e.n, max(e.pol.limit-e.before, 0))
		if excess := e.n - e.granted; excess > 0 {
			if err := k.refund(ctx, e.key, excess); err != nil && k.onLost != nil {
				k.onLost(e.key, excess, err)
			}
		}
		if after == e.n {
			if err := expireScript.Exec(ctx, c, []string{e.key}, []string{counterTTL}).Error(); err != nil {
				k.log.Warn("counter created without its TTL", "err", err.Error())
			}
		}
	}
}

// expireScript gives a counter that has none its TTL (never pushing an
// existing one forward).
var expireScript = rueidis.NewLuaScript(`
local counter_key = KEYS[1]
local ttl_seconds = ARGV[1]
if redis.call('TTL', counter_key) == -1 then
  return redis.call('EXPIRE', counter_key, ttl_seconds)
end
return 0
`)

// refund takes n counted calls back from the counter key.
func (k *redisCounter) refund(ctx context.Context, key string, n int64) error {
	c, err := k.conn.Client()
	if err != nil {
		return err
	}
	return refundScript.Exec(ctx, c, []string{key}, []string{strconv.FormatInt(n, 10)}).Error()
}

// groupOf is the queue of a counter key: one for all on a single Redis, one
// per hash slot on a Cluster (a script's keys must share a slot there).
func (k *redisCounter) groupOf(key string) uint16 {
	if c, err := k.conn.Client(); err == nil && c.Mode() == rueidis.ClientModeCluster {
		return hashSlot(key)
	}
	return 0
}
