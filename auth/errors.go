package main

import (
	"errors"
	"log/slog"

	"github.com/gofiber/fiber/v3"

	"pesto/shared/apikey"
	"pesto/shared/redisconn"
	"pesto/shared/sentry"
)

// errorCode is the kind of an answer other than 200. The decision returns
// codes; the store returns errors of its own (apikey.ErrNotFound, Redis errors);
// errorCodeOf maps every error to a code, and errorAnswers maps every code
// to its status and message: the one table of SPEC §2's error answers.
type errorCode uint8

const (
	eInternal      errorCode = iota // any other fault: a corrupt record, an error reply
	eUnavailable                    // Redis unreachable or too slow
	eNoToken                        // no X-Pesto-Token
	eNotRegistered                  // malformed or unknown key
	eRevoked                        // revoked key
	eQuota                          // monthly quota used up
	eRateLimited                    // over the key's rate
	eBadRequest                     // rejected by the HTTP layer
	eNotFound                       // a route other than the hook's
	eTooMany                        // /api/usage asked too often by one client
	numCodes
)

func (c errorCode) Error() string { return errorAnswers[c].message }

// errorAnswer is what the error handler sends for a code: the status, the JSON
// body {"message":"…"} and the same message in X-Pesto-Error.
type errorAnswer struct {
	status     int
	message    string
	retryAfter string // Retry-After value, if any; eQuota's, eRateLimited's and eTooMany's vary: the handler sets them
	body       []byte
}

// errorAnswers is the table of SPEC §2, byte for byte.
var errorAnswers = func() [numCodes]errorAnswer {
	a := [numCodes]errorAnswer{
		eInternal:      {status: fiber.StatusInternalServerError, message: "Internal server error"},
		eUnavailable:   {status: fiber.StatusInternalServerError, message: "Internal server error", retryAfter: "1"},
		eNoToken:       {status: fiber.StatusUnauthorized, message: "Token must be supplied"},
		eNotRegistered: {status: fiber.StatusUnauthorized, message: "Token not registered"},
		eRevoked:       {status: fiber.StatusUnauthorized, message: "Token has been revoked"},
		eQuota:         {status: fiber.StatusTooManyRequests, message: "Monthly limit exceeded"},
		eRateLimited:   {status: fiber.StatusTooManyRequests, message: "Too many requests"},
		eBadRequest:    {status: fiber.StatusBadRequest, message: "Bad request"},
		eNotFound:      {status: fiber.StatusNotFound, message: "Not found"},
		eTooMany:       {status: fiber.StatusTooManyRequests, message: "Too many requests"},
	}
	for i := range a {
		a[i].body = []byte(`{"message":"` + a[i].message + `"}`)
	}
	return a
}()

// errorCodeOf maps an error to its answer's code.
func errorCodeOf(err error) errorCode {
	var code errorCode
	var fe *fiber.Error
	switch {
	case errors.As(err, &code):
		return code
	case errors.Is(err, apikey.ErrNotFound):
		return eNotRegistered
	case errors.As(err, &fe):
		// Rejected by the HTTP layer or the router: never echo the request.
		if fe.Code == fiber.StatusNotFound || fe.Code == fiber.StatusMethodNotAllowed {
			return eNotFound
		}
		return eBadRequest
	case redisconn.Unavailable(err):
		return eUnavailable
	default:
		return eInternal
	}
}

// errorHandler turns every error into its answer. Faults are logged here,
// once; the answers of the decision table are not logged.
func errorHandler(log *slog.Logger, m *authMetrics, rep *sentry.Reporter) fiber.ErrorHandler {
	return func(c fiber.Ctx, err error) error {
		code, ok := err.(errorCode) // the common case, without errors.As's allocations
		if !ok {
			code = errorCodeOf(err)
		}
		switch code {
		case eUnavailable:
			m.redisErrors.Inc()
			log.Error("redis unavailable", "err", err.Error())
			rep.Report(err, map[string]string{"kind": "redis_unavailable"})
		case eInternal:
			m.faults.Inc()
			log.Error("internal error", "err", err.Error())
			rep.Report(err, map[string]string{"kind": "internal"})
		}
		a := &errorAnswers[code]
		c.Status(a.status)
		c.Response().Header.Del(fiber.HeaderAllow) // fiber's guess, wrong for the hook
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		c.Set("X-Pesto-Error", a.message)
		if a.retryAfter != "" {
			c.Set(fiber.HeaderRetryAfter, a.retryAfter)
		}
		return c.Send(a.body)
	}
}
