package api

import (
	"context"
	"net/netip"
	"strconv"

	"github.com/gofiber/fiber/v3"

	"pesto/registration/internal/config"
	"pesto/shared/clientip"
	shared "pesto/shared/config"
	"pesto/shared/metrics"
	"pesto/shared/ratelimit"
	"pesto/shared/redisconn"
	"pesto/shared/wire"
)

// rateLimiter allows each client of one route rate requests, and the route
// global requests over all clients together; over either: 429 with
// Retry-After in whole seconds (at least 1). An IPv6 client counts against
// each of its prefixes (a /48 holds 65,536 /64s), each at its multiple of
// rate.
type rateLimiter struct {
	conn     *redisconn.Conn
	ips      clientip.Resolver
	prefix   string
	perIPv4  []string // burst, period of an IPv4 address
	global   []string // burst, period of the global bucket
	prefixes []config.RatePrefix
	perIPv6  []string // burst, period of each of prefixes, in turn
	limited  *metrics.Counter
}

func newRateLimiter(conn *redisconn.Conn, ips clientip.Resolver, route string, r, global shared.Rate, prefixes []config.RatePrefix, limited *metrics.Counter) *rateLimiter {
	args := func(r shared.Rate, times int) []string {
		return []string{strconv.FormatInt(r.Count*int64(times), 10), strconv.FormatInt(r.Per.Microseconds(), 10)}
	}
	l := &rateLimiter{
		conn:     conn,
		ips:      ips,
		prefix:   rateLimitPrefix + "{" + route + "}:",
		perIPv4:  args(r, 1),
		global:   args(global, 1),
		prefixes: prefixes,
		limited:  limited,
	}
	for _, p := range prefixes {
		l.perIPv6 = append(l.perIPv6, args(r, p.Times)...)
	}
	return l
}

// buckets returns the keys and the script's arguments of a request from a.
func (l *rateLimiter) buckets(a netip.Addr) (keys, args []string) {
	switch {
	case a.Is6():
		for _, p := range l.prefixes {
			keys = append(keys, l.prefix+netip.PrefixFrom(a, p.Bits).Masked().String())
		}
		args = append(args, l.perIPv6...)
	case a.IsValid():
		keys, args = []string{l.prefix + a.String()}, append(args, l.perIPv4...)
	default:
		keys, args = []string{l.prefix + "unknown"}, append(args, l.perIPv4...)
	}
	return append(keys, l.prefix+"all"), append(args, l.global...)
}

// allow counts the request against its client's limits and the route's
// global cap, or returns the 429: one script call. Handlers call it after
// validating the request, so that a request refused for what it says
// neither touches Redis nor uses up a limit.
func (l *rateLimiter) allow(ctx context.Context, c fiber.Ctx) error {
	keys, args := l.buckets(l.ips.ClientIP(c))
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

// rateLimitPrefix starts every rate-limit key:
// pesto:ratelimit:{<route>}:<bucket>, where a bucket is an IPv4 address, an
// IPv6 prefix (2001:db8:1:2::/64) or "all" (the route's global cap). The
// hash tag puts a route's buckets in one cluster slot, so that one script
// checks and counts all of a request's buckets at once.
const rateLimitPrefix = wire.OwnPrefix + "ratelimit:"
