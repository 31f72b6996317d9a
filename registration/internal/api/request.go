package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/gofiber/fiber/v3"
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

// Messages of keyField.
const (
	msgTokenMissing = "token is required"
	msgTokenType    = "token must be a string"
)

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
