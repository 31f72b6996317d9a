package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/mail"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gofiber/fiber/v3"
	"golang.org/x/net/idna"
)

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

// parseEmail returns the address in the form it is compared and stored in
// when it is a single address that net/mail accepts, written as a bare
// address (no display name, no angle brackets, no comment) of at most 254
// bytes: trimmed, its domain lower-cased and in its ASCII (IDNA) form, the
// local part as written. Characters that look like nothing are refused, so
// that two addresses that look the same are the same: control and format
// characters (Unicode Cc, Cf: zero-width, bidi controls…) and every space
// but the ASCII one (which net/mail refuses inside an address anyway).
func parseEmail(v string) (string, error) {
	if strings.IndexFunc(v, invisible) >= 0 {
		return "", badRequest(msgEmail)
	}
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
	at := strings.LastIndexByte(v, '@')
	domain, err := idna.Lookup.ToASCII(strings.ToLower(v[at+1:]))
	if err != nil || domain == "" {
		return "", badRequest(msgEmail)
	}
	v = v[:at+1] + domain
	if len(v) > maxEmailBytes {
		return "", badRequest(msgEmailLength)
	}
	return v, nil
}

// invisible reports whether r is refused anywhere in an email: a control
// or format character, or a space other than ASCII's (leading and trailing
// ASCII white space is trimmed before).
func invisible(r rune) bool {
	switch {
	case r < utf8.RuneSelf:
		return r < 0x20 && !unicode.IsSpace(r) || r == 0x7f
	case unicode.IsControl(r), unicode.Is(unicode.Cf, r), unicode.IsSpace(r), unicode.Is(unicode.Zs, r):
		return true
	}
	return false
}

// sendMessage sends the JSON body {"message":"…"} with the status set.
func sendMessage(c fiber.Ctx, message string) error {
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(newAPIError(0, message).body)
}

// readAdminJSON reads an admin request body: JSON only.
func readAdminJSON(c fiber.Ctx, v any) error {
	if err := rejectEncoding(c); err != nil {
		return err
	}
	if mediaType(c) != fiber.MIMEApplicationJSON {
		return errContentType
	}
	return decodeObject(c.Request().Body(), v)
}

// either returns a unless it is absent, else b.
func either(a, b json.RawMessage) json.RawMessage {
	if a != nil {
		return a
	}
	return b
}

// requiredString reads a JSON string that must be present.
func requiredString(raw json.RawMessage, typeMsg, missingMsg string) (string, error) {
	if raw == nil || string(raw) == "null" {
		return "", badRequest(missingMsg)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", badRequest(typeMsg)
	}
	return s, nil
}

// keyField reads the "token" of an admin request that names an existing
// key (revoke, rotate): a string, not empty.
func keyField(raw json.RawMessage) (string, error) {
	token, err := requiredString(raw, msgTokenType, msgTokenMissing)
	if err == nil && token == "" {
		err = badRequest(msgTokenMissing)
	}
	return token, err
}

// redisTimeout bounds the Redis work of one request, so that a dead or slow
// Redis is answered 500 within a second, never a hang.
const redisTimeout = 500 * time.Millisecond
