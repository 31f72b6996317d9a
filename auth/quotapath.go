package main

import (
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/gofiber/fiber/v3"

	"pesto/shared/logging"
	"pesto/shared/wire"
)

// The one path from a request's key to its month's quota state, which the
// hook and GET /api/usage share:
//
//	token → record → revoked → unmetered → counter → quota state
//
// requestToken takes the token; each caller reads the record its own way
// (the hook through the client-side cache, /api/usage with its TTL, never
// cached); followRecord does the rest, with the caller's counter step (the
// hook counts the call, /api/usage reads the counter).

// headerToken carries the API key.
const headerToken = "X-Pesto-Token"

// requestToken returns the key in X-Pesto-Token: eNoToken when there is
// none, eNotRegistered when it is malformed (it is never looked up). The
// token is copied out of fiber's buffer, which is reused after the handler
// returns (and the client-side cache may keep the key).
func requestToken(c fiber.Ctx) (string, error) {
	token := c.Get(headerToken)
	if token == "" {
		return "", eNoToken
	}
	if !wire.WellFormedToken(token) {
		return "", eNotRegistered
	}
	return strings.Clone(token), nil
}

// counterStep is the counter step of the path: the calls counted on email's
// counter of the month of t, under the key's policy (the hook: after
// counting this call, which the verdict says it did).
type counterStep func(t time.Time, email string, pol policy) (verdict, error)

// keyMonth is a live key's month, as followRecord finds it.
type keyMonth struct {
	rec       wire.TokenRecord
	at        time.Time // when the record was found live (now)
	unmetered bool      // UNMETERED_EMAILS: no count, no quota state
	pol       policy    // what the key's calls are held to
	verdict   verdict   // the counter step's
	state     quotaState
	rate      rateState // when the key has a rate and the counter step read it
}

// metering is what the path holds every key to besides its record (from
// the configuration).
type metering struct {
	// unmetered is a lower-case path.Match pattern of the emails allowed
	// without counting; "" meters everyone.
	unmetered string
	// rate is the rate of a key whose record has none of its own; the
	// zero Rate: none.
	rate wire.Rate
}

// policyOf is what rec's calls are held to: its monthly limit, and its own
// rate, else the default; none when that is off.
func (m metering) policyOf(rec wire.TokenRecord) policy {
	p := policy{limit: rec.MonthlyLimit, rate: rec.Rate}
	if p.rate == (wire.Rate{}) {
		p.rate = m.rate
	}
	if !p.rate.On() {
		p.rate = wire.Rate{}
	}
	return p
}

// followRecord follows raw, the record found under token, to its month:
// eRevoked for a revoked record; a corrupt record's error, naming the token
// as logs may; the counter step's error. An unmetered record (its email
// matches m.unmetered) skips the counter step. The quota state has 0
// remaining unless the counter step allowed the call or the rate refused
// it (then it has what the month has left).
func followRecord(token, raw string, m metering, now func() time.Time, count counterStep) (keyMonth, error) {
	rec, err := wire.DecodeTokenRecord(raw)
	if err != nil {
		return keyMonth{}, fmt.Errorf("token %s: %w", logging.Token(token), err)
	}
	if rec.Revoked {
		return keyMonth{}, eRevoked
	}
	k := keyMonth{rec: rec, at: now()}
	if m.unmetered != "" && isUnmetered(m.unmetered, rec.UserEmail) {
		k.unmetered = true
		return k, nil
	}
	k.pol = m.policyOf(rec)
	if k.verdict, err = count(k.at, rec.UserEmail, k.pol); err != nil {
		return keyMonth{}, err
	}
	reset, window := monthOf(k.at)
	k.state = quotaState{limit: max(rec.MonthlyLimit, 0), reset: reset, window: window}
	if k.verdict.allowed || k.verdict.limited {
		k.state.remaining = max(k.state.limit-k.verdict.used, 0)
	}
	if k.verdict.rated {
		k.rate = rateStateOf(k.pol.rate, k.verdict.rateLeft, k.verdict.rateWait)
	}
	return k, nil
}

// isUnmetered matches email, case-insensitively, against the lower-case
// pattern.
func isUnmetered(pattern, email string) bool {
	ok, _ := path.Match(pattern, strings.ToLower(email))
	return ok
}
