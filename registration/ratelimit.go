package main

import (
	"context"
	"strconv"

	"github.com/gofiber/fiber/v3"
	"github.com/redis/rueidis"

	"pesto/shared/metrics"
	"pesto/shared/redisconn"
)

// rateScript is a generic cell rate algorithm (GCRA) limiter, one atomic
// step however many replicas share the Redis: a client may make burst
// requests at once, then one every period/burst. The key holds the
// "theoretical arrival time" in microseconds of the Redis clock (so
// replicas' clocks do not matter; microseconds, so that rates up to a million
// a second keep their spacing) and expires when the client is back to a full
// burst. Returns 0 when the request is allowed, else the milliseconds until one
// would be.
var rateScript = rueidis.NewLuaScript(`
local client_key = KEYS[1]
local burst = tonumber(ARGV[1])
local period = tonumber(ARGV[2]) -- microseconds
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = period / burst
local tat = tonumber(redis.call('GET', client_key) or '0')
if tat < now then tat = now end
local newtat = tat + interval
local allowAt = newtat - period
if allowAt > now then return math.ceil((allowAt - now) / 1000) end
redis.call('SET', client_key, string.format('%d', math.ceil(newtat)), 'PX', math.max(1, math.ceil((newtat - now) / 1000)))
return 0
`)

// rateLimiter allows each client rate requests of one route; over it: 429
// with Retry-After in whole seconds (at least 1).
type rateLimiter struct {
	conn          *redisconn.Conn
	ips           clientIPs
	prefix        string
	burst, period string
	limited       *metrics.Counter
}

func newRateLimiter(conn *redisconn.Conn, ips clientIPs, route string, r rate, limited *metrics.Counter) *rateLimiter {
	return &rateLimiter{
		conn:    conn,
		ips:     ips,
		prefix:  rateLimitPrefix + route + ":",
		burst:   strconv.FormatInt(r.Count, 10),
		period:  strconv.FormatInt(r.Per.Microseconds(), 10),
		limited: limited,
	}
}

// allow counts the request against its client's limit, or returns the 429.
// Handlers call it after validating the request, so that a request refused
// for what it says neither touches Redis nor uses up the client's limit.
func (l *rateLimiter) allow(ctx context.Context, c fiber.Ctx) error {
	key := l.prefix + rateKey(l.ips.clientIP(c))
	cl, err := l.conn.Client()
	if err != nil {
		return err
	}
	wait, err := rateScript.Exec(ctx, cl, []string{key}, []string{l.burst, l.period}).AsInt64()
	if err != nil {
		return err
	}
	if wait > 0 {
		l.limited.Inc()
		return tooManyRequests(strconv.FormatInt((wait+999)/1000, 10))
	}
	return nil
}
