package api

import (
	"context"
	"log/slog"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v3"

	"pesto/registration/internal/proof"
	"pesto/shared/clientip"
	"pesto/shared/metrics"
	"pesto/shared/ratelimit"
	"pesto/shared/redisconn"
)

// The headers of the proof of work: a 429 of a global cap carries a
// challenge, and a request may carry its answer.
const (
	headerChallenge = "X-Pesto-Challenge"
	headerProof     = "X-Pesto-Proof"
)

// rateLimiter allows each client of one route its rate, and the route a
// global rate over all clients together (ratelimit.Limits); over either:
// 429 with Retry-After in whole seconds (at least 1). When the global cap
// refuses a request its 429 carries a challenge (proof.Issuer): a request
// that answers it passes the global cap through a second one as large,
// each answer once.
type rateLimiter struct {
	conn    *redisconn.Conn
	ips     clientip.Resolver
	route   string
	limits  ratelimit.Limits
	proofs  *proof.Issuer
	limited *metrics.Counter
}

func newRateLimiter(conn *redisconn.Conn, ips clientip.Resolver, route string, limits ratelimit.Limits, proofs *proof.Issuer, limited *metrics.Counter) *rateLimiter {
	return &rateLimiter{conn: conn, ips: ips, route: route, limits: limits, proofs: proofs, limited: limited}
}

// allow counts the request against its client's limits and the route's
// global cap (or, with an answered challenge, the second one), or returns
// the 429: one script call. Handlers call it after validating the request,
// so that a request refused for what it says neither touches Redis nor
// uses up a limit. An answer that is not valid (expired, another route's,
// not enough work) counts for nothing: the request is taken as a plain one.
func (l *rateLimiter) allow(ctx context.Context, c fiber.Ctx) (ratelimit.Grant, error) {
	var pr *ratelimit.Proof
	if v := c.Get(headerProof); v != "" {
		if id, expires, err := l.proofs.Verify(l.route, strings.TrimSpace(v)); err == nil {
			pr = &ratelimit.Proof{ID: id, Expires: expires}
		}
	}
	cl, err := l.conn.Client()
	if err != nil {
		return ratelimit.Grant{}, err
	}
	g, err := l.limits.Allow(ctx, cl, l.ips.ClientIP(c), pr)
	if err != nil {
		return g, err
	}
	switch g.Outcome {
	case ratelimit.RefusedClient:
		l.limited.Inc()
		return g, tooManyRequests(strconv.FormatInt((g.Wait+999)/1000, 10), "")
	case ratelimit.RefusedGlobal:
		l.limited.Inc()
		return g, tooManyRequests(strconv.FormatInt((g.Wait+999)/1000, 10), l.proofs.Challenge(l.route))
	}
	return g, nil
}

// giveBack returns to the route's global cap the request allow counted in
// it (g), when the request stored nothing (a signup of a listed person, a
// full list, a failure): the global caps bound what is stored, and a
// client repeating what stores nothing cannot use them up for everyone.
// Its client's buckets keep it. A failure to give back is only logged: the
// cap is then a request tighter for a while.
func (l *rateLimiter) giveBack(ctx context.Context, log *slog.Logger, g ratelimit.Grant) {
	cl, err := l.conn.Client()
	if err == nil {
		err = l.limits.Refund(ctx, cl, g)
	}
	if err != nil {
		log.Warn("rate limit: a request that stored nothing was not given back", "err", err.Error())
	}
}
