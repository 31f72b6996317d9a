package api

import (
	"encoding/json"
	"errors"
	"log/slog"

	"github.com/gofiber/fiber/v3"

	"pesto/registration/internal/address"
	"pesto/registration/internal/rotation"
	"pesto/registration/internal/waitlist"
	"pesto/registration/web"
	"pesto/shared/apikey"
	"pesto/shared/redisconn"
	"pesto/shared/sentry"
)

// apiError is an answer of SPEC §3–§4 other than a success: a status and a
// message, sent as the JSON body {"message":"…"}.
type apiError struct {
	status     int
	message    string
	body       []byte
	retryAfter string // Retry-After value, if any
	challenge  string // X-Pesto-Challenge value, if any (a proof of work)
}

func (e *apiError) Error() string { return e.message }

func newAPIError(status int, message string) *apiError {
	body, _ := json.Marshal(struct {
		Message string `json:"message"`
	}{message}) // a struct of a string always encodes
	return &apiError{status: status, message: message, body: body}
}

// badRequest is a 400 whose message names the offending field.
func badRequest(message string) *apiError { return newAPIError(fiber.StatusBadRequest, message) }

// tooManyRequests is the 429 of a rate limit, retry after the given
// seconds; challenge, when not empty, is a proof of work whose answer lets
// the request pass the global cap now.
func tooManyRequests(retryAfter, challenge string) *apiError {
	e := *errRateLimited
	e.retryAfter, e.challenge = retryAfter, challenge
	return &e
}

// The answers of the HTTP layer, byte for byte.
var (
	errTooLarge         = newAPIError(fiber.StatusRequestEntityTooLarge, "Request body too large")
	errContentType      = newAPIError(fiber.StatusUnsupportedMediaType, "Unsupported content type")
	errBadJSON          = badRequest("Invalid JSON body")
	errBadForm          = badRequest("Invalid form body")
	errBadRequest       = badRequest("Bad request")
	errNotFound         = newAPIError(fiber.StatusNotFound, "Not found")
	errRateLimited      = newAPIError(fiber.StatusTooManyRequests, "Too many requests")
	errUnauthorized     = newAPIError(fiber.StatusUnauthorized, "Unauthorized")
	errAdminOff         = newAPIError(fiber.StatusServiceUnavailable, "Admin API is not configured")
	errInternal         = newAPIError(fiber.StatusInternalServerError, "Internal server error")
	errRedisUnavailable = func() *apiError { e := *errInternal; e.retryAfter = "1"; return &e }()
)

// The answers of an email address refused (address.Parse), which signup
// and approve also give for an email that is missing or not a string.
const (
	msgEmail          = "email must be a single email address without a display name"
	msgEmailLength    = "email must be at most 254 bytes"
	msgEmailLookalike = "email must be written in one script, without invisible or look-alike characters"
)

// listFullRetryAfter is the Retry-After of a full waiting list, in seconds:
// the list makes room only as an admin approves or rejects signups.
const listFullRetryAfter = "3600"

// domainAnswers is the answer of each error of the layers below, byte for
// byte: with the answers above, the one table of registration's answers
// other than a success.
var domainAnswers = []struct {
	err    error
	answer *apiError
}{
	{waitlist.ErrListFull, func() *apiError {
		e := newAPIError(fiber.StatusServiceUnavailable, "Waiting list is full")
		e.retryAfter = listFullRetryAfter
		return e
	}()},
	{waitlist.ErrEmailNotListed, badRequest("Email does not exists")},
	{waitlist.ErrTokenExists, badRequest("Token already exists")},
	{waitlist.ErrBadCursor, badRequest("cursor is not valid")},
	{apikey.ErrNotFound, badRequest("User does not exists")},
	{rotation.ErrRevoked, badRequest("Token has been revoked")},
	{address.ErrInvalid, badRequest(msgEmail)},
	{address.ErrTooLong, badRequest(msgEmailLength)},
	{address.ErrLookalike, badRequest(msgEmailLookalike)},
}

// answerOf is the answer of err: an *apiError as it is, an error of the
// domain as domainAnswers says, nil for any other error (a fault).
func answerOf(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	for _, d := range domainAnswers {
		if errors.Is(err, d.err) {
			return d.answer
		}
	}
	return nil
}

// errorHandler turns every error into its answer. Faults are logged here,
// once. A form POST from a browser without JavaScript (see markResultPage)
// gets the result page with the same status instead of JSON.
func errorHandler(log *slog.Logger, m *regMetrics, rep *sentry.Reporter) fiber.ErrorHandler {
	return func(c fiber.Ctx, err error) error {
		ae := answerOf(err)
		var fe *fiber.Error
		switch {
		case ae != nil:
		case errors.As(err, &fe):
			// Rejected by the HTTP layer or the router: never echo the request.
			switch {
			case fe.Code == fiber.StatusRequestEntityTooLarge:
				ae = errTooLarge
			case fe.Code == fiber.StatusNotFound || fe.Code == fiber.StatusMethodNotAllowed:
				ae = errNotFound
			case fe.Code < 500:
				ae = errBadRequest
			default:
				m.faults.Inc()
				log.Error("http layer error", "status", fe.Code)
				ae = errInternal
			}
		case redisconn.Unavailable(err):
			m.redisErrors.Inc()
			log.Error("redis unavailable", "path", c.Path(), "err", err.Error())
			rep.Report(err, map[string]string{"kind": "redis_unavailable"})
			ae = errRedisUnavailable
		default:
			m.faults.Inc()
			log.Error("internal error", "path", c.Path(), "err", err.Error())
			rep.Report(err, map[string]string{"kind": "internal"})
			ae = errInternal
		}
		c.Response().Header.Del(fiber.HeaderAllow)
		if ae.retryAfter != "" {
			c.Set(fiber.HeaderRetryAfter, ae.retryAfter)
		}
		if ae.challenge != "" {
			c.Set(headerChallenge, ae.challenge)
		}
		c.Status(ae.status)
		if wantsResultPage(c) {
			return sendPage(c, web.Refused(ae.message))
		}
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.Send(ae.body)
	}
}
