package main

import (
	"context"
	"log/slog"

	"github.com/gofiber/fiber/v3"

	"pesto/shared/apikey"
	"pesto/shared/logging"
	"pesto/shared/redisconn"
	"pesto/shared/wire"
)

// createTrial stores a new trial key in storage's form: SET NX with a TTL
// of a day. A collision (astronomically unlikely) draws another key.
func createTrial(ctx context.Context, conn *redisconn.Conn, storage wire.KeyStorage, domain string) (string, error) {
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
		created, err := apikey.Keys{Storage: storage}.Create(ctx, c, token, rec, apikey.In(wire.TrialTTL))
		if err == nil && !created {
			continue
		}
		return token, err
	}
	return "", errCollision
}

// handleTrial answers POST /api/trial: 200 {"token":"TRIAL-…"}.
func handleTrial(log *slog.Logger, conn *redisconn.Conn, storage wire.KeyStorage, domain string, limit *rateLimiter, m *regMetrics) fiber.Handler {
	return func(c fiber.Ctx) error {
		ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
		defer cancel()
		if err := limit.allow(ctx, c); err != nil {
			return err
		}
		token, err := createTrial(ctx, conn, storage, domain)
		if err != nil {
			return err
		}
		m.trials.Inc()
		log.Info("trial key created", "token", logging.Token(token))
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.SendString(`{"token":"` + token + `"}`)
	}
}
