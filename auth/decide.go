package main

import (
	"errors"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v3"
	"github.com/valyala/fasthttp"

	"pesto/shared/apikey"
	"pesto/shared/wire"
)

// Limits of the decision.
const (
	// redisTimeout bounds the Redis work of one decision, so that a dead or
	// slow Redis is answered 500 within a second, never a hang. Requests
	// within deadlineStep of each other share one deadline.
	redisTimeout = 500 * time.Millisecond
	deadlineStep = 50 * time.Millisecond
)

func timeNow() time.Time { return time.Now() }

// handleDecide answers the auth hook (SPEC §2): 200 lets the request
// through; every other answer is an errorCode, or an error that
// errorCodeOf maps to one, for the error handler.
func handleDecide(store tokenStore, mt metering, now func() time.Time, m *authMetrics, warn *warnings) fiber.Handler {
	deadlines := newDeadlines(redisTimeout, deadlineStep)
	return func(c fiber.Ctx) error {
		token, err := requestToken(c)
		if err != nil {
			if err == eNoToken {
				m.outcome[outNoToken].Inc()
			} else {
				m.outcome[outMalformed].Inc()
			}
			return err
		}

		ctx := deadlines.context(time.Now())
		raw, cached, err := store.Record(ctx, token)
		if cached {
			m.cacheHits.Inc()
		} else {
			m.cacheMisses.Inc()
		}
		switch {
		case errors.Is(err, apikey.ErrNotFound):
			m.outcome[outNotRegistered].Inc()
			return err
		case err != nil:
			m.outcome[outError].Inc()
			return err
		}
		k, err := followRecord(token, raw, mt, now, func(t time.Time, email string, pol policy) (verdict, error) {
			if pol.limit <= 0 {
				return verdict{}, nil // a limit of 0 allows nothing
			}
			return store.Count(ctx, wire.CounterKey(t, email), pol)
		})
		switch {
		case err == eRevoked:
			m.outcome[outRevoked].Inc()
			return err
		case err != nil:
			m.outcome[outError].Inc()
			return err
		case k.unmetered:
			m.outcome[outUnmetered].Inc()
			c.Status(fiber.StatusOK)
			return nil
		case k.verdict.limited:
			m.outcome[outRateLimited].Inc()
			setRateHeaders(&c.Response().Header, k.state, k.rate)
			setRetryAfter(&c.Response().Header, max(k.rate.reset, 1))
			return eRateLimited
		case !k.verdict.allowed:
			m.outcome[outOverQuota].Inc()
			setRateHeaders(&c.Response().Header, k.state, k.rate)
			setRetryAfter(&c.Response().Header, k.state.reset)
			return eQuota
		}
		setRateHeaders(&c.Response().Header, k.state, k.rate)
		warn.after(k.rec.UserEmail, k.rec.MonthlyLimit, k.verdict.used, k.at) // a comparison, unless this call crosses a threshold
		m.outcome[outAllowed].Inc()
		c.Status(fiber.StatusOK) // and no body
		return nil
	}
}

// setRetryAfter sets Retry-After to seconds.
func setRetryAfter(h *fasthttp.ResponseHeader, seconds int64) {
	var num [20]byte
	h.SetBytesV(fiber.HeaderRetryAfter, strconv.AppendInt(num[:0], seconds, 10))
}
