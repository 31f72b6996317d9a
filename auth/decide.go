package main

import (
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v3"

	"pesto/shared/apikey"
	"pesto/shared/logging"
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

// headerToken carries the API key.
const headerToken = "X-Pesto-Token"

func timeNow() time.Time { return time.Now() }

// handleDecide answers the auth hook (SPEC §2): 200 lets the request
// through; every other answer is an errorCode, or an error that
// errorCodeOf maps to one, for the error handler.
func handleDecide(store tokenStore, unmetered string, now func() time.Time, m *authMetrics, warn *warnings) fiber.Handler {
	deadlines := newDeadlines(redisTimeout, deadlineStep)
	return func(c fiber.Ctx) error {
		token := c.Get(headerToken)
		if token == "" {
			m.outcome[outNoToken].Inc()
			return eNoToken
		}
		if !wire.WellFormedToken(token) {
			m.outcome[outMalformed].Inc()
			return eNotRegistered
		}
		// fiber reuses the header's bytes after the handler returns, and the
		// client-side cache may keep the key: give it its own copy.
		token = strings.Clone(token)

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
		rec, err := wire.DecodeTokenRecord(raw)
		if err != nil {
			m.outcome[outError].Inc()
			return fmt.Errorf("token %s: %w", logging.Token(token), err)
		}
		if rec.Revoked {
			m.outcome[outRevoked].Inc()
			return eRevoked
		}
		if unmetered != "" && isUnmetered(unmetered, rec.UserEmail) {
			m.outcome[outUnmetered].Inc()
			c.Status(fiber.StatusOK)
			return nil
		}

		t := now()
		reset, window := monthOf(t)
		used, allowed := int64(0), false
		if rec.MonthlyLimit > 0 {
			used, allowed, err = store.Count(ctx, wire.CounterKey(t, rec.UserEmail), rec.MonthlyLimit)
			if err != nil {
				m.outcome[outError].Inc()
				return err
			}
		}
		q := quotaState{limit: max(rec.MonthlyLimit, 0), reset: reset, window: window}
		if !allowed {
			m.outcome[outOverQuota].Inc()
			setRateHeaders(&c.Response().Header, q)
			var num [20]byte
			c.Response().Header.SetBytesV(fiber.HeaderRetryAfter, strconv.AppendInt(num[:0], reset, 10))
			return eQuota
		}
		q.remaining = rec.MonthlyLimit - used
		setRateHeaders(&c.Response().Header, q)
		warn.after(rec.UserEmail, rec.MonthlyLimit, used, t) // a comparison, unless this call crosses a threshold
		m.outcome[outAllowed].Inc()
		c.Status(fiber.StatusOK) // and no body
		return nil
	}
}

// isUnmetered matches email, case-insensitively, against the lower-case
// pattern.
func isUnmetered(pattern, email string) bool {
	ok, _ := path.Match(pattern, strings.ToLower(email))
	return ok
}
