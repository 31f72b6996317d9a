package main

import (
	"context"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v3"

	"pesto/shared/clientip"
	"pesto/shared/ratelimit"
	"pesto/shared/wire"
)

// usageRoute names the rate limit buckets of /api/usage:
// pesto:ratelimit:{usage}:<bucket> (ratelimit.Limits; registration's routes
// have their own: {register}, {trial}).
const usageRoute = "usage"

// usage is the body of a 200 of GET /api/usage.
type usage struct {
	Unmetered bool       // the email is UNMETERED_EMAILS': no count, no limit
	Limit     int64      // MonthlyLimit, at least 0
	Used      int64      // calls counted this UTC month
	Remaining int64      // Limit - Used, at least 0
	Reset     time.Time  // the start of the next UTC month
	Rate      rateState  // the key's rate, if it has one
	Expires   *time.Time // when the key expires, if it does
}

// appendJSON writes u as
// {"limit":N,"used":N,"remaining":N,"reset":"<RFC 3339>"[,"rate":{…}][,"expires":"<RFC 3339>"]},
// or {"unmetered":true,"reset":…[,"expires":…]} for an unmetered key; the
// rate is {"limit":N,"window":<seconds>[,"burst":N],"remaining":N,"reset":<seconds>}:
// calls in any window, how many may go now, and the seconds until more may.
func (u usage) appendJSON(b []byte) []byte {
	if u.Unmetered {
		b = append(b, `{"unmetered":true`...)
	} else {
		b = append(b, `{"limit":`...)
		b = strconv.AppendInt(b, u.Limit, 10)
		b = append(b, `,"used":`...)
		b = strconv.AppendInt(b, u.Used, 10)
		b = append(b, `,"remaining":`...)
		b = strconv.AppendInt(b, u.Remaining, 10)
	}
	b = append(b, `,"reset":"`...)
	b = u.Reset.UTC().AppendFormat(b, time.RFC3339)
	b = append(b, '"')
	if r := u.Rate; r.on {
		b = append(b, `,"rate":{"limit":`...)
		b = strconv.AppendInt(b, r.limit, 10)
		b = append(b, `,"window":`...)
		b = strconv.AppendInt(b, r.window, 10)
		if r.burst > 0 {
			b = append(b, `,"burst":`...)
			b = strconv.AppendInt(b, r.burst, 10)
		}
		b = append(b, `,"remaining":`...)
		b = strconv.AppendInt(b, r.remaining, 10)
		b = append(b, `,"reset":`...)
		b = strconv.AppendInt(b, r.reset, 10)
		b = append(b, '}')
	}
	if u.Expires != nil {
		b = append(b, `,"expires":"`...)
		b = u.Expires.UTC().AppendFormat(b, time.RFC3339)
		b = append(b, '"')
	}
	return append(b, '}')
}

// handleUsage answers GET /api/usage: what the key in X-Pesto-Token has
// used of its month, counting no call. A missing, malformed, unknown or
// revoked key gets the hook's 401 answers, byte for byte. Each client (an
// IPv4 address; an IPv6 client at each of its prefixes, as registration
// counts them) may ask within its limits, and every client together within
// the global one (limits), shared by every replica, well-formed key or not:
// 429 {"message":"Too many requests"} with Retry-After beyond that, so that
// no number of addresses can use the route to try keys faster than that.
func handleUsage(acct accountStore, ips clientip.Resolver, limits ratelimit.Limits, mt metering, now func() time.Time) fiber.Handler {
	return func(c fiber.Ctx) error {
		token, err := requestToken(c)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
		defer cancel()

		keys, args := limits.Buckets(ips.ClientIP(c))
		wait, err := acct.Allow(ctx, keys, args)
		if err != nil {
			return err
		}
		if wait > 0 {
			c.Set(fiber.HeaderRetryAfter, strconv.FormatInt((wait+999)/1000, 10))
			return eTooMany
		}

		raw, ttl, err := acct.RecordTTL(ctx, token)
		if err != nil {
			return err
		}
		k, err := followRecord(token, raw, mt, now, func(t time.Time, email string, pol policy) (verdict, error) {
			// Asking counts no call and spends no rate.
			key := wire.CounterKey(t, email)
			used, err := acct.Used(ctx, key)
			if err != nil || !pol.rate.On() {
				return verdict{used: used, allowed: true}, err
			}
			left, wait, err := acct.RateLeft(ctx, key, pol.rate)
			return verdict{used: used, allowed: true, rated: true, rateLeft: left, rateWait: wait}, err
		})
		if err != nil {
			return err
		}
		u := usage{Unmetered: k.unmetered, Reset: wire.NextMonth(k.at)}
		if ttl > 0 {
			exp := k.at.Add(ttl).Round(time.Second)
			u.Expires = &exp
		}
		if !k.unmetered {
			u.Used, u.Limit, u.Remaining, u.Rate = k.verdict.used, k.state.limit, k.state.remaining, k.rate
			setRateHeaders(&c.Response().Header, k.state, k.rate)
		}
		c.Set(fiber.HeaderCacheControl, "no-store")
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.Send(u.appendJSON(make([]byte, 0, 128)))
	}
}
