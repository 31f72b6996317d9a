package main

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"time"

	"github.com/gofiber/fiber/v3"
	"github.com/redis/rueidis"

	"pesto/shared/logging"
	"pesto/shared/redisconn"
	"pesto/shared/wire"
)

// Shapes of generated keys (SPEC §1).
const (
	trialPrefix      = "TRIAL-"
	trialTokenChars  = 58
	trialEmailChars  = 20
	approvedKeyChars = 64
)

const alphanumeric = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randomAlphanumeric returns n characters of [A-Za-z0-9] from crypto/rand,
// each equally likely: bytes of 248 and above (248 = 4×62) are discarded
// rather than folded onto the first characters.
func randomAlphanumeric(n int) string {
	out := make([]byte, 0, n)
	buf := make([]byte, n+n/4+8)
	for len(out) < n {
		_, _ = rand.Read(buf) // crypto/rand.Read never fails (Go ≥ 1.24)
		for _, b := range buf {
			if b < 248 && len(out) < n {
				out = append(out, alphanumeric[b%62])
			}
		}
	}
	return string(out)
}

// errCollision: a freshly generated key already exists.
var errCollision = errors.New("generated key already exists")

// createTrial stores a new trial key: SET NX with a TTL of a day. A
// collision (astronomically unlikely) draws another key.
func createTrial(ctx context.Context, conn *redisconn.Conn, domain string) (string, error) {
	c, err := conn.Client()
	if err != nil {
		return "", err
	}
	for range 3 {
		token := trialPrefix + randomAlphanumeric(trialTokenChars)
		rec := wire.TokenRecord{
			UserEmail:    "trial-" + randomAlphanumeric(trialEmailChars) + "@" + domain,
			MonthlyLimit: wire.TrialMonthlyLimit,
		}
		err := c.Do(ctx, c.B().Set().Key(token).Value(rueidis.BinaryString(rec.Encode())).
			Nx().Ex(wire.TrialTTL).Build()).Error()
		if rueidis.IsRedisNil(err) {
			continue
		}
		return token, err
	}
	return "", errCollision
}

// handleTrial answers POST /api/trial: 200 {"token":"TRIAL-…"}.
func handleTrial(log *slog.Logger, conn *redisconn.Conn, domain string, limit *rateLimiter, m *regMetrics) fiber.Handler {
	return func(c fiber.Ctx) error {
		ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
		defer cancel()
		if err := limit.allow(ctx, c); err != nil {
			return err
		}
		token, err := createTrial(ctx, conn, domain)
		if err != nil {
			return err
		}
		m.trials.Inc()
		log.Info("trial key created", "token", logging.Token(token))
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.SendString(`{"token":"` + token + `"}`)
	}
}

// redisTimeout bounds the Redis work of one request, so that a dead or slow
// Redis is answered 500 within a second, never a hang.
const redisTimeout = 500 * time.Millisecond
