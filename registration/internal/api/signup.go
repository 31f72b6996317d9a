package api

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gofiber/fiber/v3"

	"pesto/registration/internal/address"
	"pesto/registration/internal/waitlist"
	"pesto/registration/web"
	"pesto/shared/redisconn"
	"pesto/shared/wire"
)

// Bounds of a signup (SPEC §3).
const (
	maxNameRunes     = 100
	maxBuildingRunes = 1000
	maxCalls         = 1_000_000_000
	// maxStoredSignup bounds a signup as stored on the list, whatever it
	// holds: with WAITING_LIST_MAX it bounds the list's memory.
	maxStoredSignup = 1024
)

// Validation messages; each names its field.
const (
	msgName         = "name must be 1 to 100 characters"
	msgNameString   = "name must be a string"
	msgNameControl  = "name must not contain control characters"
	msgNameUTF8     = "name must be valid UTF-8"
	msgEmailString  = "email must be a string"
	msgBuilding     = "building must be at most 1000 characters"
	msgBuildingType = "building must be a string"
	msgBuildingUTF8 = "building must be valid UTF-8"
	msgBuildingCtl  = "building must not contain control characters"
	msgBuildingSize = "building is too long: a signup is stored in at most 1024 bytes"
	msgCallsMissing = "calls is required"
	msgCalls        = "calls must be an integer from 0 to 1000000000"
)

// handleRegister answers POST /api/register (SPEC §3): JSON or a plain HTML
// form; 201 Created, or 202 Accepted for a person already listed.
func handleRegister(log *slog.Logger, conn *redisconn.Conn, listMax int, limit *rateLimiter, m *regMetrics) fiber.Handler {
	return func(c fiber.Ctx) error {
		if err := rejectEncoding(c); err != nil {
			return err
		}
		var s wire.Signup
		var err error
		switch mediaType(c) {
		case fiber.MIMEApplicationJSON:
			s, err = signupFromJSON(c.Request().Body())
		case fiber.MIMEApplicationForm:
			s, err = signupFromForm(c.Request().Body())
		default:
			return errContentType
		}
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
		defer cancel()
		grant, err := limit.allow(ctx, c)
		if err != nil {
			return err
		}
		created, err := waitlist.Register(ctx, conn, s, listMax)
		if !created {
			limit.giveBack(ctx, log, grant) // a duplicate, a full list or a failure: nothing stored
		}
		if err != nil {
			return err
		}
		status, message := fiber.StatusAccepted, "Accepted"
		if created {
			status, message = fiber.StatusCreated, "Created"
			m.registered.Inc()
		} else {
			m.duplicates.Inc()
		}
		log.Debug("signup", "created", created)
		c.Status(status)
		if wantsResultPage(c) {
			return sendPage(c, web.Confirmed())
		}
		return sendMessage(c, message)
	}
}

// signupFromJSON reads and checks {"name","email","building","calls"}.
// Unknown fields are ignored.
func signupFromJSON(body []byte) (wire.Signup, error) {
	var v map[string]json.RawMessage
	if err := decodeObject(body, &v); err != nil {
		return wire.Signup{}, err
	}
	var s wire.Signup
	var err error
	if s.Name, err = requiredString(v["name"], msgNameString, msgName); err != nil {
		return s, err
	}
	if !validJSONText(v["name"], s.Name) {
		return s, badRequest(msgNameUTF8)
	}
	if s.Email, err = requiredString(v["email"], msgEmailString, msgEmail); err != nil {
		return s, err
	}
	if !validJSONText(v["email"], s.Email) {
		return s, badRequest(msgEmail)
	}
	raw, ok := v["building"]
	if ok && string(raw) != "null" {
		if s.Building, err = requiredString(raw, msgBuildingType, msgBuildingType); err != nil {
			return s, err
		}
		if !validJSONText(raw, s.Building) {
			return s, badRequest(msgBuildingUTF8)
		}
	}
	raw, ok = v["calls"]
	if !ok || string(raw) == "null" {
		return s, badRequest(msgCallsMissing)
	}
	if s.Calls, err = parseCalls(string(raw)); err != nil {
		return s, err
	}
	return checkSignup(s)
}

// validJSONText reports whether the JSON string raw, decoded as decoded,
// held only valid UTF-8. encoding/json silently turns invalid bytes and lone
// surrogate escapes ("\ud800") into U+FFFD, which would store text other
// than what was sent; a U+FFFD the client wrote itself (as is or as
// "\ufffd") is kept.
func validJSONText(raw json.RawMessage, decoded string) bool {
	if !utf8.Valid(raw) {
		return false
	}
	written := bytes.Count(raw, []byte("\uFFFD")) + bytes.Count(bytes.ToLower(raw), []byte(`\ufffd`))
	return strings.Count(decoded, "\uFFFD") <= written
}

// signupFromForm reads the same fields form-encoded; the first value of
// each counts. Invalid UTF-8, raw or percent-encoded, is refused by the
// checks of each field, with a message that names it.
func signupFromForm(body []byte) (wire.Signup, error) {
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return wire.Signup{}, errBadForm
	}
	s := wire.Signup{Name: vals.Get("name"), Email: vals.Get("email"), Building: vals.Get("building")}
	if !vals.Has("name") {
		return s, badRequest(msgName)
	}
	if !vals.Has("email") {
		return s, badRequest(msgEmail)
	}
	if !vals.Has("calls") || strings.TrimSpace(vals.Get("calls")) == "" {
		return s, badRequest(msgCallsMissing)
	}
	if s.Calls, err = parseCalls(strings.TrimSpace(vals.Get("calls"))); err != nil {
		return s, err
	}
	return checkSignup(s)
}

// parseCalls reads a plain decimal integer 0–1,000,000,000 (no sign, no
// fraction, no exponent).
func parseCalls(v string) (int64, error) {
	if v == "" || v[0] < '0' || v[0] > '9' {
		return 0, badRequest(msgCalls)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n > maxCalls {
		return 0, badRequest(msgCalls)
	}
	return n, nil
}

// checkSignup applies the rules of SPEC §3 and trims name and email.
func checkSignup(s wire.Signup) (wire.Signup, error) {
	if !utf8.ValidString(s.Name) {
		return s, badRequest(msgNameUTF8)
	}
	s.Name = strings.TrimSpace(s.Name)
	if n := utf8.RuneCountInString(s.Name); n < 1 || n > maxNameRunes {
		return s, badRequest(msgName)
	}
	if strings.IndexFunc(s.Name, unicode.IsControl) >= 0 {
		return s, badRequest(msgNameControl)
	}
	email, err := address.Parse(s.Email)
	if err != nil {
		return s, err
	}
	s.Email = email
	if !utf8.ValidString(s.Building) {
		return s, badRequest(msgBuildingUTF8)
	}
	if utf8.RuneCountInString(s.Building) > maxBuildingRunes {
		return s, badRequest(msgBuilding)
	}
	if strings.IndexFunc(s.Building, unicode.IsControl) >= 0 {
		return s, badRequest(msgBuildingCtl)
	}
	if len(s.Encode()) > maxStoredSignup {
		// Without a building a signup fits: a name is at most 100 × 6
		// bytes ("\u2028"), an email 254.
		return s, badRequest(msgBuildingSize)
	}
	return s, nil
}

// markResultPage notes, before anything can fail, whether a register
// request is a plain HTML form POST from a browser (form-encoded, and
// text/html preferred over JSON): its answer, success or error, is then the
// result page with the same status.
func markResultPage(c fiber.Ctx) error {
	if mediaType(c) == fiber.MIMEApplicationForm &&
		c.Accepts(fiber.MIMEApplicationJSON, fiber.MIMETextHTML) == fiber.MIMETextHTML {
		c.Locals(localResultPage, true)
	}
	return c.Next()
}
