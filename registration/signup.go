package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/mail"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gofiber/fiber/v3"
	"github.com/redis/rueidis"

	"pesto/registration/web"
	"pesto/shared/redisconn"
	"pesto/shared/wire"
)

// Bounds of a signup (SPEC §3).
const (
	maxNameRunes     = 100
	maxEmailBytes    = 254
	maxBuildingRunes = 1000
	maxCalls         = 1_000_000_000
)

// Validation messages; each names its field.
const (
	msgName         = "name must be 1 to 100 characters"
	msgNameString   = "name must be a string"
	msgNameControl  = "name must not contain control characters"
	msgNameUTF8     = "name must be valid UTF-8"
	msgEmail        = "email must be a single email address without a display name"
	msgEmailString  = "email must be a string"
	msgEmailLength  = "email must be at most 254 bytes"
	msgBuilding     = "building must be at most 1000 characters"
	msgBuildingType = "building must be a string"
	msgBuildingUTF8 = "building must be valid UTF-8"
	msgCallsMissing = "calls is required"
	msgCalls        = "calls must be an integer from 0 to 1000000000"
)

// pageThanks is the result page's message after a form POST without
// JavaScript. Created and Accepted read the same, so the page does not tell whether an email
// is already known either.
const pageThanks = "Thank you! Your request is on the waiting list. You will get your API key by email once it is approved."

// findSignupLua defines find(list, email): the search of the waiting list
// for a signup of the same person, shared by every script that looks one
// up. email is the address trimmed and ASCII-lower-cased (personKey). The
// list may hold 10,000 elements, so each is first checked as plain text,
// without decoding it: at each '@' in it, the bytes either side are
// compared with the email's, and only then the whole address, lower-cased.
// An element is decoded (cjson) only when that matches, or when it holds an
// escape (a legacy writer may have written "\u002B" for "+"). It returns
// the first matching element's raw value, or nil.
const findSignupLua = `
local sfind, sbyte, slower, ssub = string.find, string.byte, string.lower, string.sub
local function same(raw, email)
  local ok, v = pcall(cjson.decode, raw)
  if not ok or type(v) ~= 'table' or type(v.email) ~= 'string' then return false end
  return slower((string.gsub(v.email, '^%s*(.-)%s*$', '%1'))) == email
end
local function find(list, email)
  local at = sfind(email, '@', 1, true)
  local n = #email
  local b1, B1, b2, B2 = -1, -1, -1, -1
  local fast = at and at > 1 and at < n
  if fast then
    b1 = sbyte(email, at - 1)
    B1 = sbyte(string.upper(string.char(b1)))
    b2 = sbyte(email, at + 1)
    B2 = sbyte(string.upper(string.char(b2)))
  end
  local len = redis.call('LLEN', list)
  for first = 0, len - 1, 1000 do
    local chunk = redis.call('LRANGE', list, first, first + 999)
    for i = 1, #chunk do
      local raw = chunk[i]
      local maybe = sfind(raw, '\\', 1, true) ~= nil
      if not maybe then
        if fast then
          local p = sfind(raw, '@', at, true)
          while p do
            local x, _, y = sbyte(raw, p - 1, p + 1)
            if (x == b1 or x == B1) and (y == b2 or y == B2) and slower(ssub(raw, p - at + 1, p - at + n)) == email then
              maybe = true
              break
            end
            p = sfind(raw, '@', p + 1, true)
          end
        else
          maybe = sfind(slower(raw), email, 1, true) ~= nil
        end
      end
      if maybe and same(raw, email) then return raw end
    end
  end
  return nil
end
`

// registerScript appends a signup unless the same person is on the list:
// the check and the RPUSH are one atomic step, so racing signups of one
// email leave one entry. KEYS[1] waiting list; ARGV[1] the signup as
// stored, ARGV[2] its email for find (personKey). Returns 1 when appended,
// 0 when already listed.
var registerScript = rueidis.NewLuaScript(findSignupLua + `
if find(KEYS[1], ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
return 1
`)

// personKey returns how the scripts compare emails: trimmed and lower-cased
// in ASCII, as Lua's string.lower does. (Two addresses that differ only in
// the case of a non-ASCII letter count as two people.)
func personKey(email string) string {
	email = strings.TrimSpace(email)
	b := []byte(email)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}

// register stores s unless the same person is listed; created tells which.
func register(ctx context.Context, conn *redisconn.Conn, s wire.Signup) (created bool, err error) {
	c, err := conn.Client()
	if err != nil {
		return false, err
	}
	n, err := registerScript.Exec(ctx, c, []string{wire.WaitingList},
		[]string{string(s.Encode()), personKey(s.Email)}).AsInt64()
	return n == 1, err
}

// handleRegister answers POST /api/register (SPEC §3): JSON or a plain HTML
// form; 201 Created, or 202 Accepted for a person already listed.
func handleRegister(log *slog.Logger, conn *redisconn.Conn, limit *rateLimiter, m *regMetrics) fiber.Handler {
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
		if err := limit.allow(ctx, c); err != nil {
			return err
		}
		created, err := register(ctx, conn, s)
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
			return sendPage(c, web.Result(true, pageThanks))
		}
		return sendMessage(c, message)
	}
}

// mediaType returns the request's Content-Type without parameters, lower-cased.
func mediaType(c fiber.Ctx) string {
	ct := string(c.Request().Header.ContentType())
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(strings.TrimSpace(ct))
}

// rejectEncoding refuses a compressed body: it would be read as is, and
// inflating it could exceed MAX_BODY_BYTES many times over.
func rejectEncoding(c fiber.Ctx) error {
	if ce := c.Get(fiber.HeaderContentEncoding); ce != "" && !strings.EqualFold(ce, "identity") {
		return errContentType
	}
	return nil
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

// decodeObject decodes exactly one JSON object from body into v.
func decodeObject(body []byte, v any) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return errBadJSON
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return badRequest(te.Field + " has the wrong type")
		}
		return errBadJSON
	}
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		return errBadJSON // something after the object
	}
	return nil
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
	email, err := parseEmail(s.Email)
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
	return s, nil
}

// parseEmail returns the trimmed address when it is a single address that
// net/mail accepts, written as a bare address (no display name, no angle
// brackets, no comment) of at most 254 bytes.
func parseEmail(v string) (string, error) {
	v = strings.TrimSpace(v)
	if len(v) > maxEmailBytes {
		return "", badRequest(msgEmailLength)
	}
	if v == "" || !utf8.ValidString(v) || strings.ContainsAny(v, "<>()\",;") {
		return "", badRequest(msgEmail)
	}
	a, err := mail.ParseAddress(v)
	if err != nil || a.Name != "" || a.Address != v {
		return "", badRequest(msgEmail)
	}
	return v, nil
}

// sendMessage sends the JSON body {"message":"…"} with the status set.
func sendMessage(c fiber.Ctx, message string) error {
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(newAPIError(0, message).body)
}
