package api

import (
	"cmp"
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v3"

	"pesto/registration/internal/address"
	"pesto/registration/internal/waitlist"
	"pesto/shared/apikey"
	"pesto/shared/logging"
	"pesto/shared/redisconn"
	"pesto/shared/wire"
)

// Page sizes of GET /api/pending.
const (
	defaultPendingLimit = 100
	maxPendingLimit     = 1000
)

// Admin validation messages; each names its field.
const (
	msgApproveEmail = "email is required"
	msgEmailType    = "email must be a string"
	msgLimit        = "limit must be a positive integer"
	msgLimitMissing = "limit is required"
	msgToken        = "token must be 1 to 256 printable ASCII characters and not a reserved key"
	msgRate         = "rate must be a rate such as 10/s or 600/m;burst=100 (count 1 to 1000000), or off"
	msgPendingLimit = "limit must be an integer from 1 to 1000"
)

// handlePending answers GET /api/pending?limit=&cursor=: a page of the
// waiting list, and a Link header to the next page when one follows.
func handlePending(store *waitlist.Store) fiber.Handler {
	return func(c fiber.Ctx) error {
		limit := defaultPendingLimit
		if v := c.Query("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxPendingLimit {
				return badRequest(msgPendingLimit)
			}
			limit = n
		}
		ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
		defer cancel()
		body, next, err := store.Pending(ctx, limit, c.Query("cursor"))
		if err != nil {
			return err
		}
		if next != "" {
			c.Set(fiber.HeaderLink, "</api/pending?limit="+strconv.Itoa(limit)+"&cursor="+next+`>; rel="next"`)
		}
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.Send(body)
	}
}

// handleApprove answers PUT /api/approve: {"email","limit","token"?,
// "rate"?, "expires_in"? | "expires_at"?}, or the legacy
// {"UserEmail","MonthlyLimit","Token"}.
func handleApprove(log *slog.Logger, store *waitlist.Store, m *regMetrics) fiber.Handler {
	return func(c fiber.Ctx) error {
		var body struct {
			Email        json.RawMessage `json:"email"`
			UserEmail    json.RawMessage `json:"UserEmail"`
			Limit        json.RawMessage `json:"limit"`
			MonthlyLimit json.RawMessage `json:"MonthlyLimit"`
			Token        json.RawMessage `json:"token"`
			Rate         json.RawMessage `json:"rate"`
			ExpiresIn    json.RawMessage `json:"expires_in"`
			ExpiresAt    json.RawMessage `json:"expires_at"`
		}
		if err := readAdminJSON(c, &body); err != nil {
			return err
		}
		var a waitlist.Approval
		var err error
		if a.Email, err = requiredString(either(body.Email, body.UserEmail), msgEmailType, msgApproveEmail); err != nil {
			return err
		}
		if a.Email = strings.TrimSpace(a.Email); a.Email == "" {
			return badRequest(msgApproveEmail)
		}
		// The key is emailed to this address: one that cannot be mailed
		// (a legacy signup's "email" with a line break, no '@'…) cannot be
		// approved, only rejected. It is looked up in the form signups
		// are stored in (domain lower-cased, in ASCII).
		if a.Email, err = address.Parse(a.Email); err != nil {
			return err
		}
		limit := either(body.Limit, body.MonthlyLimit)
		if limit == nil {
			return badRequest(msgLimitMissing)
		}
		if err := json.Unmarshal(limit, &a.Limit); err != nil || a.Limit < 1 {
			return badRequest(msgLimit)
		}
		if body.Token != nil && string(body.Token) != "null" {
			if a.Token, err = requiredString(body.Token, msgTokenType, msgToken); err != nil {
				return err
			}
			if !wire.WellFormedToken(a.Token) {
				return badRequest(msgToken)
			}
		}
		if a.Rate, err = rateField(body.Rate); err != nil {
			return err
		}
		if a.Expires, err = parseExpiry(body.ExpiresIn, body.ExpiresAt, time.Now()); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
		defer cancel()
		token, err := store.Approve(ctx, a)
		if err != nil {
			return err
		}
		m.approvals.Inc()
		attrs := []any{"admin", adminSub(c), "token", logging.Token(token), "limit", a.Limit}
		if a.Rate != (wire.Rate{}) {
			attrs = append(attrs, "rate", a.Rate.String())
		}
		if !a.Expires.IsZero() {
			attrs = append(attrs, "expires", a.Expires.UTC().Format(time.RFC3339))
		}
		log.Info("approved", attrs...)
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		out, _ := json.Marshal(struct {
			Message string `json:"message"`
			Token   string `json:"token"`
		}{"OK", token})
		return c.Send(out)
	}
}

// rateField reads the optional "rate" of an approval: a key's own rate as
// its record keeps it (wire.ParseRate); absent or null: none (the default
// applies).
func rateField(raw json.RawMessage) (wire.Rate, error) {
	if raw = nullAsAbsent(raw); raw == nil {
		return wire.Rate{}, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return wire.Rate{}, badRequest(msgRate)
	}
	r, err := wire.ParseRate(s)
	if err != nil {
		return wire.Rate{}, badRequest(msgRate)
	}
	return r, nil
}

// handleRevoke answers PUT /api/revoke {"token"}: Revoked set in every
// form the key has (apikey.Keys.Revoke).
func handleRevoke(log *slog.Logger, conn *redisconn.Conn, keys apikey.Keys, m *regMetrics) fiber.Handler {
	return func(c fiber.Ctx) error {
		var body struct {
			Token json.RawMessage `json:"token"`
		}
		if err := readAdminJSON(c, &body); err != nil {
			return err
		}
		token, err := keyField(body.Token)
		if err != nil {
			return err
		}
		if !wire.WellFormedToken(token) {
			return apikey.ErrNotFound // no such key can exist
		}
		ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
		defer cancel()
		rc, err := conn.Client()
		if err != nil {
			return err
		}
		if err := keys.Revoke(ctx, rc, token); err != nil {
			return err
		}
		m.revokes.Inc()
		log.Info("revoked", "admin", adminSub(c), "token", logging.Token(token))
		return sendMessage(c, "OK")
	}
}

// handleReject answers PUT /api/reject {"email"}: the signup leaves the
// list and no email is sent.
func handleReject(log *slog.Logger, store *waitlist.Store, m *regMetrics) fiber.Handler {
	return func(c fiber.Ctx) error {
		var body struct {
			Email json.RawMessage `json:"email"`
		}
		if err := readAdminJSON(c, &body); err != nil {
			return err
		}
		email, err := requiredString(body.Email, msgEmailType, msgApproveEmail)
		if err != nil {
			return err
		}
		if email = strings.TrimSpace(email); email == "" {
			return badRequest(msgApproveEmail)
		}
		if len(email) > address.MaxBytes {
			return badRequest(msgEmailLength)
		}
		ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
		defer cancel()
		// The stored form first (a signup of ours); as written otherwise,
		// so that any legacy element can be rejected.
		removed, discarded, err := false, "", error(nil)
		if canonical, perr := address.Parse(email); perr == nil && canonical != email {
			if removed, discarded, err = store.Reject(ctx, canonical); err != nil {
				return err
			}
		}
		if !removed {
			var d string
			if removed, d, err = store.Reject(ctx, email); err != nil {
				return err
			}
			discarded = cmp.Or(discarded, d)
		}
		if discarded != "" {
			log.Info("deleted the never-delivered key of an unfinished approval", "admin", adminSub(c),
				"token", logging.Token(discarded))
		}
		if !removed {
			return waitlist.ErrEmailNotListed
		}
		m.rejects.Inc()
		log.Info("rejected", "admin", adminSub(c))
		return sendMessage(c, "OK")
	}
}
