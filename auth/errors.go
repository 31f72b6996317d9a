package main

import (
	"errors"
	"log/slog"

	"github.com/gofiber/fiber/v3"

	"pesto/shared/redisconn"
	"pesto/shared/sentry"
)

// apiError is an answer of SPEC §2: a status and a message, sent as the
// JSON body {"message":"…"} and in the X-Pesto-Error header.
type apiError struct {
	status     int
	message    string
	body       []byte
	retryAfter string // Retry-After value set by the error handler, if any
}

func (e *apiError) Error() string { return e.message }

func newAPIError(status int, message, retryAfter string) *apiError {
	return &apiError{status: status, message: message, body: []byte(`{"message":"` + message + `"}`), retryAfter: retryAfter}
}

// The answers of SPEC §2, byte for byte. errQuota's Retry-After depends on
// the date: the handler sets it.
var (
	errNoToken       = newAPIError(fiber.StatusUnauthorized, "Token must be supplied", "")
	errNotRegistered = newAPIError(fiber.StatusUnauthorized, "Token not registered", "")
	errRevoked       = newAPIError(fiber.StatusUnauthorized, "Token has been revoked", "")
	errQuota         = newAPIError(fiber.StatusTooManyRequests, "Monthly limit exceeded", "")
	errBadRequest    = newAPIError(fiber.StatusBadRequest, "Bad request", "")
	errNotFound      = newAPIError(fiber.StatusNotFound, "Not found", "")
	errUnavailable   = newAPIError(fiber.StatusInternalServerError, "Internal server error", "1")
	errInternal      = newAPIError(fiber.StatusInternalServerError, "Internal server error", "")
)

// errorHandler turns every error into its answer. Faults are logged here,
// once; the answers of the decision table are not logged.
func errorHandler(log *slog.Logger, m *authMetrics, rep *sentry.Reporter) fiber.ErrorHandler {
	return func(c fiber.Ctx, err error) error {
		ae, ok := err.(*apiError) // the common case, without errors.As's allocations
		var fe *fiber.Error
		switch {
		case ok:
		case errors.As(err, &ae):
		case errors.As(err, &fe):
			// Rejected by the HTTP layer or the router: never echo the request.
			ae = errBadRequest
			if fe.Code == fiber.StatusNotFound || fe.Code == fiber.StatusMethodNotAllowed {
				ae = errNotFound
			}
		case redisconn.Unavailable(err):
			m.redisErrors.Inc()
			log.Error("redis unavailable", "err", err.Error())
			rep.Report(err, map[string]string{"kind": "redis_unavailable"})
			ae = errUnavailable
		default:
			m.faults.Inc()
			log.Error("internal error", "err", err.Error())
			rep.Report(err, map[string]string{"kind": "internal"})
			ae = errInternal
		}
		c.Status(ae.status)
		c.Response().Header.Del(fiber.HeaderAllow) // fiber's guess, wrong for the hook
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		c.Set("X-Pesto-Error", ae.message)
		if ae.retryAfter != "" {
			c.Set(fiber.HeaderRetryAfter, ae.retryAfter)
		}
		return c.Send(ae.body)
	}
}
