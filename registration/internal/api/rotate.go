package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v3"

	"pesto/registration/internal/rotation"
	"pesto/shared/apikey"
	"pesto/shared/logging"
	"pesto/shared/wire"
)

// msgGrace refuses a grace that is not a whole number of seconds in range.
const msgGrace = "grace must be a whole number of seconds from 0 to 31536000"

// handleRotate answers PUT /api/rotate {"token","grace"?}: a new key for the
// same email, limit and rate, emailed like an approval; the old key keeps
// working for grace seconds (default 86400; 0 revokes it at once), then is
// gone.
func handleRotate(log *slog.Logger, store *rotation.Store, m *regMetrics) fiber.Handler {
	return func(c fiber.Ctx) error {
		var body struct {
			Token json.RawMessage `json:"token"`
			Grace json.RawMessage `json:"grace"`
		}
		if err := readAdminJSON(c, &body); err != nil {
			return err
		}
		token, err := keyField(body.Token)
		if err != nil {
			return err
		}
		grace := rotation.DefaultGrace
		if g := nullAsAbsent(body.Grace); g != nil {
			n, err := strconv.ParseInt(string(g), 10, 64) // a JSON integer: no fraction, exponent or quotes
			if err != nil || n < 0 || n > int64(rotation.MaxGrace/time.Second) || g[0] == '+' {
				return badRequest(msgGrace)
			}
			grace = time.Duration(n) * time.Second
		}
		if !wire.WellFormedToken(token) {
			return apikey.ErrNotFound // no such key can exist
		}
		ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
		defer cancel()
		newToken, err := store.Rotate(ctx, token, grace)
		if err != nil {
			return err
		}
		m.rotations.Inc()
		log.Info("rotated", "admin", adminSub(c), "token", logging.Token(token), "new_token", logging.Token(newToken),
			"grace", grace.String())
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		out, _ := json.Marshal(struct {
			Message string `json:"message"`
			Token   string `json:"token"`
		}{"OK", newToken})
		return c.Send(out)
	}
}
