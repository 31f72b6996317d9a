// Package ratelimit is the rate limits both services keep in Redis, shared
// by every replica: a generic cell rate algorithm over several buckets in
// one atomic script, the buckets of a route (buckets.go), and a second
// global bucket that a request with a proof of work may pass when plain
// requests have used up the first.
package ratelimit

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// gcraLua is a generic cell rate algorithm (GCRA) over buckets, for the
// scripts below, which are one atomic step however many replicas share the
// Redis. A bucket allows burst requests at once, then one every
// period/burst. Its key holds the "theoretical arrival time" in
// microseconds of the Redis clock (so replicas' clocks do not matter;
// microseconds, so that rates up to a million a second keep their spacing)
// and expires when the bucket is back to a full burst. step(i) reads
// bucket KEYS[i], whose burst and period in µs are ARGV[2i-1] and ARGV[2i],
// and returns its arrival time after one more request and the milliseconds
// until that request would be allowed (0: now); count(i, tat) counts it.
const gcraLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function step(i)
  local burst, period = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local next_tat = tat + period / burst
  local allow_at = next_tat - period
  if allow_at > now then return next_tat, math.ceil((allow_at - now) / 1000) end
  return next_tat, 0
end
local function count(i, tat)
  redis.call('SET', KEYS[i], string.format('%d', math.ceil(tat)), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
end
`

// script allows a request when every bucket of KEYS allows it, and then
// counts it in every bucket. Returns 0 when the request is allowed, else
// the milliseconds until it would be.
var script = rueidis.NewLuaScript(gcraLua + `
local wait, tats = 0, {}
for i = 1, #KEYS do
  local w
  tats[i], w = step(i)
  wait = math.max(wait, w)
end
if wait > 0 then return wait end
for i = 1, #KEYS do count(i, tats[i]) end
return 0
`)

// Allow counts one request against every bucket of keys, whose args are
// the burst and the period in microseconds of each, in turn (Args makes
// them). It returns 0 when the request is allowed, else the milliseconds
// until it would be (and counts nothing).
func Allow(ctx context.Context, c rueidis.Client, keys, args []string) (waitMillis int64, err error) {
	return script.Exec(ctx, c, keys, args).AsInt64()
}

// provenScript is script with a way past the global bucket. KEYS: the
// client's buckets, the global bucket, the proven bucket, and the key of
// the request's proof of work; ARGV: the burst and period of each bucket
// in turn, then the life of the proof's key in ms ("0": no proof). A
// request the client's buckets allow is counted in them and the global
// bucket when that allows it; else, with a proof not used before, in the
// proven bucket when that allows it, and the proof's key is set. Returns
// {0, 0} when counted in the global bucket, {0, 1} in the proven one, {ms,
// 2} when the client's buckets refuse it, {ms, 3} when the global bucket
// does (and the proof, if any, does not help): ms until the client's and
// the global buckets would allow it.
var provenScript = rueidis.NewLuaScript(gcraLua + `
local n = #KEYS - 2
local global, proven, once = n, n + 1, n + 2
local once_ms = tonumber(ARGV[2 * proven + 1])
local wait, tats = 0, {}
for i = 1, n - 1 do
  local w
  tats[i], w = step(i)
  wait = math.max(wait, w)
end
local global_wait
tats[global], global_wait = step(global)
if wait > 0 then return {math.max(wait, global_wait), 2} end
if global_wait == 0 then
  for i = 1, n do count(i, tats[i]) end
  return {0, 0}
end
if once_ms > 0 and redis.call('EXISTS', KEYS[once]) == 0 then
  local proven_tat, proven_wait = step(proven)
  if proven_wait == 0 then
    for i = 1, n - 1 do count(i, tats[i]) end
    count(proven, proven_tat)
    redis.call('SET', KEYS[once], '1', 'PX', once_ms)
    return {0, 1}
  end
end
return {global_wait, 3}
`)

// Outcome is what happened to a request counted by Limits.Allow.
type Outcome int

// The outcomes of a request.
const (
	Allowed        Outcome = iota // counted in its client's buckets and the global one
	AllowedByProof                // the global bucket refused it; counted in the proven one, its proof used
	RefusedClient                 // its client's buckets refused it: a proof would not help
	RefusedGlobal                 // the global bucket refused it, and no usable proof let it pass
)

// Grant is the answer of Limits.Allow.
type Grant struct {
	Outcome Outcome
	// Wait is the milliseconds until a refused request would be allowed.
	Wait int64
}

// Proof is a request's proof of work, checked by the caller: ID names it,
// so that it is used once (until Expires).
type Proof struct {
	ID      string
	Expires time.Time
}

// Allow counts one request from client in one script call: against its
// client's buckets and the global bucket, or, when the global bucket
// refuses it and the request has a proof not used before, the proven
// bucket (pesto:ratelimit:{<route>}:proven, at the global rate; the proof
// used is pesto:ratelimit:{<route>}:proof:<ID> until it expires). proof
// may be nil. Nothing is counted for a refused request.
func (l Limits) Allow(ctx context.Context, c rueidis.Client, client netip.Addr, proof *Proof) (Grant, error) {
	keys, args := l.Buckets(client)
	onceKey, onceMillis := l.prefix+"proof:", "0"
	if proof != nil {
		onceKey += proof.ID
		onceMillis = strconv.FormatInt(max(time.Until(proof.Expires).Milliseconds(), 1), 10)
	}
	keys = append(keys, l.prefix+"proven", onceKey)
	args = append(append(args, l.global...), onceMillis)
	res, err := provenScript.Exec(ctx, c, keys, args).AsIntSlice()
	if err != nil {
		return Grant{}, err
	}
	if len(res) != 2 || res[1] < int64(Allowed) || res[1] > int64(RefusedGlobal) {
		return Grant{}, errors.New("ratelimit: unexpected script reply")
	}
	return Grant{Outcome: Outcome(res[1]), Wait: res[0]}, nil
}

// refundScript gives one request back to a bucket (the one script counted
// it in): its theoretical arrival time moves back by period/burst, and
// the key goes when that is no later than now (a full burst). KEYS the
// bucket; ARGV its burst and period in µs. Returns 1 when the key is kept.
var refundScript = rueidis.NewLuaScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local burst, period = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') - period / burst
if tat <= now then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('SET', KEYS[1], string.format('%d', math.ceil(tat)), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
return 1
`)

// Refund gives back to the global bucket the request g counted there (the
// global or the proven one; nothing for a refused request): for a request
// that turned out to store nothing. Its client's buckets keep it, and a
// proof stays used.
func (l Limits) Refund(ctx context.Context, c rueidis.Client, g Grant) error {
	key := l.prefix + "all"
	switch g.Outcome {
	case Allowed:
	case AllowedByProof:
		key = l.prefix + "proven"
	default:
		return nil
	}
	return refundScript.Exec(ctx, c, []string{key}, l.global).Error()
}

// Args returns the script's arguments of one bucket: burst requests at
// once, then one every per/burst.
func Args(burst int64, per time.Duration) []string {
	return []string{strconv.FormatInt(burst, 10), strconv.FormatInt(per.Microseconds(), 10)}
}
