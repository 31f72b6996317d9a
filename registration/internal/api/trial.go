package api

import (
	"context"
	"log/slog"

	"github.com/gofiber/fiber/v3"

	"pesto/registration/internal/trial"
	"pesto/shared/logging"
	"pesto/shared/redisconn"
	"pesto/shared/wire"
)

// handleTrial answers POST /api/trial: 200 {"token":"TRIAL-…"}.
func handleTrial(log *slog.Logger, conn *redisconn.Conn, storage wire.KeyStorage, domain string, limit *rateLimiter, m *regMetrics) fiber.Handler {
	return func(c fiber.Ctx) error {
		ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
		defer cancel()
		grant, err := limit.allow(ctx, c)
		if err != nil {
			return err
		}
		token, err := trial.Create(ctx, conn, storage, domain)
		if err != nil {
			limit.giveBack(ctx, log, grant)
			return err
		}
		m.trials.Inc()
		log.Info("trial key created", "token", logging.Token(token))
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.SendString(`{"token":"` + token + `"}`)
	}
}
