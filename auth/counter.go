package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"hash/maphash"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"pesto/shared/redisconn"
	"pesto/shared/wire"
)

// redisCounter counts calls in Redis, on the counting connection: the count
// and refund functions of the group commit (groupCommit), and the queue of each
// counter (groupOf). It remembers the value each counter had in its last
// reply, and its rate window's calls (seen), to count one well below its
// limits with plain commands.
type redisCounter struct {
	conn   *redisconn.Conn // the counting connection (counterOptions)
	log    *slog.Logger
	onLost func(key string, n int64, err error) // a refund that failed

	seenMu   sync.Mutex
	seen     map[uint64]seenCounter // seenHash of a counter key → what its last reply said
	rid      string                 // this replica's field of the windows: "p<id>" (newReplicaID)
	seenSeed maphash.Seed
}

func newRedisCounter(conn *redisconn.Conn, log *slog.Logger) *redisCounter {
	return &redisCounter{conn: conn, log: log, seen: map[uint64]seenCounter{}, seenSeed: maphash.MakeSeed(), rid: newReplicaID(),
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
// KEYS: the counters, then the window of each counter whose calls carry a
// rate, in order (rateWindowKey). ARGV: the deadline, the counters' TTL,
// the calls' time (Unix microseconds, the replica's clock: their slot),
// then per counter its limit, its calls, and its rate (rateArg). Returns
// per counter {used before, granted, the window's room before (-1: no
// rate), microseconds until its room grows after}. Numbers that repeat
// (limits, calls) are read once a script.
var counterScript = rueidis.NewLuaScript(rateLua + `
local deadline_us = tonumber(ARGV[1])
local ttl_seconds = ARGV[2]
local now = tonumber(ARGV[3])
local t = redis.call('TIME')
if deadline_us > 0 and tonumber(t[1]) * 1000000 + tonumber(t[2]) > deadline_us then
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
-- Every counter read in one MGET (in chunks: unpack has a stack limit).
local values = {}
for first = 1, counters_n, 200 do
  local got = redis.call('MGET', unpack(KEYS, first, math.min(first + 199, counters_n)))
  for j = 1, #got do values[first + j - 1] = got[j] end
end
local reply = {}
local added = {} -- calls counted by this script so far, per counter
local windows = {} -- windows read by this script so far, per hash
local next_window = counters_n + 1
for i = 1, counters_n do
  local counter_key = KEYS[i]
  local a = 3 * i
  local limit, n, rate = number(ARGV[a + 1]), number(ARGV[a + 2]), rate_of(ARGV[a + 3])
  local used = tonumber(values[i] or '0') + (added[counter_key] or 0)
  local granted = math.max(math.min(n, limit - used), 0)
  local room, wait = -1, 0
  if rate then
    local count, per, burst = rate[1], rate[2], rate[3]
    local h = KEYS[next_window]
    next_window = next_window + 1
    local w = windows[h]
    if w == nil or w.per ~= per then
      w = rate_read(h, now, per)
      w.per = per
      windows[h] = w
    end
    room = rate_room(w, count, burst)
    if room < granted then granted = room end
    if granted > 0 then rate_spend(h, w, granted, count, burst) end
    wait = math.ceil(rate_wait(w, count, burst))
  end
  if granted > 0 then
    local after = redis.call('INCRBY', counter_key, granted)
    if after == granted then redis.call('EXPIRE', counter_key, ttl_seconds) end
    added[counter_key] = (added[counter_key] or 0) + granted
  end
  local r = 4 * (i - 1)
  reply[r + 1], reply[r + 2], reply[r + 3], reply[r + 4] = used, granted, room, wait
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
// its limit (plainCount), and far below its rate when its calls carry one
// (rateFarBelow), is counted with plain commands; the others by
// counterScript; both go out together, in one round trip. The calls' time,
// by which a rate's slot is chosen, is read once a batch.
func (k *redisCounter) countBatch(ctx context.Context, deadline time.Time, entries []entry) error {
	c, err := k.conn.Client()
	if err != nil {
		return err
	}
	now := time.Now().UnixMicro()
	cluster := c.Mode() == rueidis.ClientModeCluster
	plain := make([]int, 0, len(entries))
	checked := make([]int, 0, len(entries))
	names := make([]uint64, len(entries)) // each counter's name in seen, hashed once
	for i := range entries {
		names[i] = k.seenHash(entries[i].key)
	}
	// This replica's plain calls of each window, with these: its own field
	// of the window, written whole (rate.go).
	own := make([]ownCalls, len(entries))
	// Whether a plain write pushes its window's expiry (ratePushDue), and
	// whether that push was done.
	push, pushed := make([]bool, len(entries)), make([]bool, len(entries))
	k.seenMu.Lock()
	rid := k.rid
	for i, e := range entries {
		s, ok := k.seen[names[i]]
		if ok && plainCount(s.used, e.n, e.pol.limit) && (!e.pol.rate.On() || s.rated && rateFarBelow(e.pol.rate, s.window, e.n)) &&
			!(e.pol.rate.On() && slices.Contains(names[:i], names[i])) { // a rated counter twice in a batch: the script counts the second (this replica writes one field a window)
			plain = append(plain, i)
			if e.pol.rate.On() {
				own[i] = s.own.add(rateSlotOf(e.pol.rate, now), e.n, now)
				push[i] = ratePushDue(e.pol.rate, s.pushed, s.own, now)
			}
		} else {
			checked = append(checked, i)
		}
	}
	k.seenMu.Unlock()

	var scriptErr error
	switch {
	case len(plain) == 0:
		scriptErr = k.countChecked(ctx, c, deadline, now, cluster, entries, checked)
	case len(checked) == 0:
		k.countPlain(ctx, c, now, cluster, rid, entries, plain, own, push, pushed)
	default: // both at once: one round trip
		done := make(chan struct{})
		go func() {
			scriptErr = k.countChecked(ctx, c, deadline, now, cluster, entries, checked)
			close(done)
		}()
		k.countPlain(ctx, c, now, cluster, rid, entries, plain, own, push, pushed)
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
		// A counter seen anew starts its plain calls of a slot from none:
		// in fields of another name.
		k.rid = newReplicaID()
	}
	for i := range entries {
		if e := &entries[i]; e.err == nil {
			s := k.seen[names[i]]
			s.used = e.before + e.granted
			if e.pol.rate.On() {
				// The window's calls after these: what it held before (the
				// rate less its room; at least the rate when it had none),
				// and those granted.
				s.rated, s.window = true, e.pol.rate.Count-e.room+e.granted
				if own[i] != nil && rid == k.rid {
					s.own = own[i]
				}
				if pushed[i] || own[i] == nil && e.granted > 0 { // a plain push, or the script's
					s.pushed = now
				}
			}
			k.seen[names[i]] = s
		}
	}
	k.seenMu.Unlock()
	return nil
}

// seenCounter is what a counter's last reply said: its value, and when its
// calls carry a rate, the calls its window held; and the calls this replica
// counted in the window with plain commands (its field of the window).
type seenCounter struct {
	used   int64
	window int64
	rated  bool
	own    ownCalls
	pushed int64 // when this replica last pushed the window's expiry (Unix microseconds)
}

// newReplicaID names this replica's field of the windows: "p" and 8
// random letters and digits.
func newReplicaID() string {
	return "p" + strings.ToLower(rand.Text()[:8])
}

// seenMax bounds the counters a replica remembers (about 50 bytes each).
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
func (k *redisCounter) countChecked(ctx context.Context, c rueidis.Client, deadline time.Time, now int64, cluster bool, entries []entry, idx []int) error {
	keys := make([]string, len(idx), 2*len(idx))
	args := make([]string, 3, 3+3*len(idx))
	args[0], args[1], args[2] = "0", counterTTL, strconv.FormatInt(now, 10)
	if !deadline.IsZero() {
		args[0] = strconv.FormatInt(deadline.UnixMicro(), 10)
	}
	for j, i := range idx {
		e := &entries[i]
		keys[j] = e.key
		args = append(args, strconv.FormatInt(e.pol.limit, 10), strconv.FormatInt(e.n, 10), rateArg(e.pol.rate))
		if e.pol.rate.On() {
			keys = append(keys, rateWindowKey(e.key, cluster))
		}
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
// counters' TTL, the calls' time, then a limit, a number of calls and a
// rate per counter) and checks its answer's shape: errLate when it ran past
// its deadline and counted nothing.
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

// countPlain counts the entries at idx with plain commands: an INCRBY each,
// and for calls that carry a rate, HSET of this replica's field of their
// window (rid: own, with these calls), HGETALL of the window, and PEXPIRE
// of it where push says so (ratePushDue; pushed says it was done). The answers
// say what was counted: the calls that fit under the limit and the rate are
// granted, the excess is given back at once (a counter or a window that
// passed its limit since this replica last saw it). A counter INCRBY had to
// create (an operator deleted it) gets its TTL right after.
func (k *redisCounter) countPlain(ctx context.Context, c rueidis.Client, now int64, cluster bool, rid string, entries []entry, idx []int, own []ownCalls, push, pushed []bool) {
	cmds := make(rueidis.Commands, 0, 4*len(idx))
	windows := make([]string, len(idx))
	for j, i := range idx {
		e := &entries[i]
		cmds = append(cmds, c.B().Incrby().Key(e.key).Increment(e.n).Build())
		if e.pol.rate.On() {
			windows[j] = rateWindowKey(e.key, cluster)
			cmds = append(cmds, c.B().Hset().Key(windows[j]).FieldValue().FieldValue(rid, own[i].field(rateSlotMicros(e.pol.rate))).Build(),
				c.B().Hgetall().Key(windows[j]).Build())
			if push[i] {
				cmds = append(cmds, c.B().Pexpire().Key(windows[j]).Milliseconds(rateWindowMillis(e.pol.rate)).Build())
			}
		}
	}
	results := c.DoMulti(ctx, cmds...)
	r := 0
	for j, i := range idx {
		e := &entries[i]
		after, err := results[r].AsInt64()
		r++
		var w window
		if e.pol.rate.On() {
			var fields map[string]string
			var created int64 // 1: HSET created this replica's field
			if err == nil {
				created, err = results[r].AsInt64()
			}
			if err == nil {
				fields, err = results[r+1].AsStrMap()
			}
			r += 2
			if push[i] {
				pushed[i] = err == nil && results[r].Error() == nil
				r++
			} else if err == nil && created == 1 {
				// The window was deleted since this replica's last push:
				// HSET made it anew, without an expiry.
				if perr := c.Do(ctx, c.B().Pexpire().Key(windows[j]).Milliseconds(rateWindowMillis(e.pol.rate)).Build()).Error(); perr != nil {
					k.log.Warn("a rate window made anew has no expiry until its next push", "err", perr.Error())
				} else {
					pushed[i] = true
				}
			}
			if err == nil {
				w = readWindow(fields, e.pol.rate, now)
			}
		}
		if err != nil {
			e.err = err
			if e.pol.rate.On() && after > 0 { // counted, but its window unread: given back
				if err := k.refund(ctx, e.key, e.n); err != nil && k.onLost != nil {
					k.onLost(e.key, e.n, err)
				}
			}
			continue
		}
		e.before = after - e.n
		e.granted = min(e.n, max(e.pol.limit-e.before, 0))
		if e.pol.rate.On() {
			e.room = max(e.pol.rate.Count-(w.total-e.n), 0)
			e.granted = min(e.granted, e.room)
		}
		if excess := e.n - e.granted; excess > 0 {
			if err := k.refund(ctx, e.key, excess); err != nil && k.onLost != nil {
				k.onLost(e.key, excess, err)
			}
			if e.pol.rate.On() {
				own[i] = own[i].add(w.t, -excess, now)
				if err := c.Do(ctx, c.B().Hset().Key(windows[j]).FieldValue().FieldValue(rid, own[i].field(rateSlotMicros(e.pol.rate))).Build()).Error(); err != nil {
					k.log.Warn("a rate window keeps calls not let through", "calls", excess, "err", err.Error())
				}
				w.calls[rateSlots] -= excess
				w.total -= excess
			}
		}
		if e.pol.rate.On() {
			e.wait = w.wait(e.pol.rate)
			if len(w.stale) > 0 {
				c.Do(ctx, c.B().Hdel().Key(windows[j]).Field(w.stale...).Build())
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
