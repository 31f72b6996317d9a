package api

import (
	"context"
	"log/slog"
	"strconv"

	"github.com/gofiber/fiber/v3"

	"pesto/shared/clientip"
	"pesto/shared/metrics"
	"pesto/shared/ratelimit"
	"pesto/shared/redisconn"
)

// rateLimiter allows each client of one route its rate, and the route a
// global rate over all clients together (ratelimit.Limits); over either:
// 429 with Retry-After in whole seconds (at least 1).
type rateLimiter struct {
	conn    *redisconn.Conn
	ips     clientip.Resolver
	limits  ratelimit.Limits
	limited *metrics.Counter
}

func newRateLimiter(conn *redisconn.Conn, ips clientip.Resolver, limits ratelimit.Limits, limited *metrics.Counter) *rateLimiter {
	return &rateLimiter{conn: conn, ips: ips, limits: limits, limited: limited}
}

// allow counts the request against its client's limits and the route's
// global cap, or returns the 429: one script call. Handlers call it after
// validating the request, so that a request refused for what it says
// neither touches Redis nor uses up a limit.
func (l *rateLimiter) allow(ctx context.Context, c fiber.Ctx) error {
	keys, args := l.limits.Buckets(l.ips.ClientIP(c))
	cl, err := l.conn.Client()
	if err != nil {
		return err
	}
	wait, err := ratelimit.Allow(ctx, cl, keys, args)
	if err != nil {
		return err
	}
	if wait > 0 {
		l.limited.Inc()
		return tooManyRequests(strconv.FormatInt((wait+999)/1000, 10))
	}
	return nil
}

// giveBack returns to the route's global bucket the request allow counted
// in it, when the request stored nothing (a signup of a listed person, a
// full list, a failure): the global cap bounds what is stored, and a
// client repeating what stores nothing cannot use it up for everyone. Its
// client's buckets keep it. A failure to give back is only logged: the
// cap is then a request tighter for a while.
func (l *rateLimiter) giveBack(ctx context.Context, log *slog.Logger) {
	cl, err := l.conn.Client()
	if err == nil {
		key, args := l.limits.Global()
		err = ratelimit.Refund(ctx, cl, key, args)
	}
	if err != nil {
		log.Warn("rate limit: a request that stored nothing was not given back", "err", err.Error())
	}
}
