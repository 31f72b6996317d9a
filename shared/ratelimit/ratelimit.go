// Package ratelimit is the per-client rate limit both services keep in
// Redis, shared by every replica: a generic cell rate algorithm in one
// atomic script.
package ratelimit

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// script is a generic cell rate algorithm (GCRA) limiter over several
// buckets, one atomic step however many replicas share the Redis: a request
// is allowed when every bucket allows it, and then counts in every bucket.
// A bucket allows burst requests at once, then one every period/burst. Its
// key holds the "theoretical arrival time" in microseconds of the Redis
// clock (so replicas' clocks do not matter; microseconds, so that rates up
// to a million a second keep their spacing) and expires when the bucket is
// back to a full burst. KEYS the buckets; ARGV burst and period in µs of
// each, in turn. Returns 0 when the request is allowed, else the
// milliseconds until it would be.
var script = rueidis.NewLuaScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wait = 0
local tats = {}
for i = 1, #KEYS do
  local burst = tonumber(ARGV[2 * i - 1])
  local period = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tats[i] = tat + period / burst
  local allowAt = tats[i] - period
  if allowAt > now then wait = math.max(wait, math.ceil((allowAt - now) / 1000)) end
end
if wait > 0 then return wait end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%d', math.ceil(tats[i])), 'PX', math.max(1, math.ceil((tats[i] - now) / 1000)))
end
return 0
`)

// Allow counts one request against every bucket of keys, whose args are
// the burst and the period in microseconds of each, in turn (Args makes
// them). It returns 0 when the request is allowed, else the milliseconds
// until it would be (and counts nothing).
func Allow(ctx context.Context, c rueidis.Client, keys, args []string) (waitMillis int64, err error) {
	return script.Exec(ctx, c, keys, args).AsInt64()
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

// Refund gives back to the bucket key (args: its burst and period, as Args
// makes them) one request that Allow counted in it: for a request that
// turned out to store nothing.
func Refund(ctx context.Context, c rueidis.Client, key string, args []string) error {
	return refundScript.Exec(ctx, c, []string{key}, args).Error()
}

// Args returns the script's arguments of one bucket: burst requests at
// once, then one every per/burst.
func Args(burst int64, per time.Duration) []string {
	return []string{strconv.FormatInt(burst, 10), strconv.FormatInt(per.Microseconds(), 10)}
}
