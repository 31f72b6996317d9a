package main

import (
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v3"

	"pesto/shared/logging"
	"pesto/shared/wire"
)

// Limits of the decision.
const (
	// maxTokenLen: a longer token is malformed and never looked up.
	maxTokenLen = 256
	// redisTimeout bounds the Redis work of one decision, so that a dead or
	// slow Redis is answered 500 within a second, never a hang. Requests
	// within deadlineStep of each other share one deadline.
	redisTimeout = 500 * time.Millisecond
	deadlineStep = 50 * time.Millisecond
)

// headerToken carries the API key.
const headerToken = "X-Pesto-Token"

func timeNow() time.Time { return time.Now() }

// wellFormed reports whether token may be looked up: at most 256 bytes of
// 0x21–0x7E that do not name one of the data model's own keys.
func wellFormed(token string) bool {
	if len(token) > maxTokenLen {
		return false
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c < 0x21 || c > 0x7e {
			return false
		}
	}
	return !wire.IsOwnKey(token)
}

// handleDecide answers the auth hook (SPEC §2): 200 lets the request
// through; every other answer is an *apiError for the error handler.
func handleDecide(store tokenStore, unmetered string, now func() time.Time, m *authMetrics) fiber.Handler {
	deadlines := newDeadlines(redisTimeout, deadlineStep)
	return func(c fiber.Ctx) error {
		token := c.Get(headerToken)
		if token == "" {
			m.outcome[outNoToken].Inc()
			return errNoToken
		}
		if !wellFormed(token) {
			m.outcome[outMalformed].Inc()
			return errNotRegistered
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
		case errors.Is(err, errMissing):
			m.outcome[outNotRegistered].Inc()
			return errNotRegistered
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
			return errRevoked
		}
		if unmetered != "" && isUnmetered(unmetered, rec.UserEmail) {
			m.outcome[outUnmetered].Inc()
			c.Status(fiber.StatusOK)
			return nil
		}

		t := now()
		reset := int64(wire.NextMonth(t).Sub(t) / time.Second)
		if reset < 1 {
			reset = 1
		}
		used, allowed := int64(0), false
		if rec.MonthlyLimit > 0 {
			used, allowed, err = store.Count(ctx, wire.CounterKey(t, rec.UserEmail), rec.MonthlyLimit)
			if err != nil {
				m.outcome[outError].Inc()
				return err
			}
		}
		h := &c.Response().Header
		var num [20]byte
		h.SetBytesV("RateLimit-Limit", strconv.AppendInt(num[:0], max(rec.MonthlyLimit, 0), 10))
		h.SetBytesV("RateLimit-Reset", strconv.AppendInt(num[:0], reset, 10))
		if !allowed {
			m.outcome[outOverQuota].Inc()
			h.SetBytesV("RateLimit-Remaining", []byte{'0'})
			h.SetBytesV(fiber.HeaderRetryAfter, strconv.AppendInt(num[:0], reset, 10))
			return errQuota
		}
		h.SetBytesV("RateLimit-Remaining", strconv.AppendInt(num[:0], rec.MonthlyLimit-used, 10))
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
