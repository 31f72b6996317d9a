package api

import (
	"encoding/json"
	"strconv"
	"time"
)

// maxKeyLifetime bounds a key's expiry: ten years from now.
const maxKeyLifetime = 10 * 365 * 24 * time.Hour

// Expiry validation messages; each names its field.
const (
	msgExpiresBoth = "give expires_in or expires_at, not both"
	msgExpiresIn   = "expires_in must be a whole number of seconds from 1 to 315360000"
	msgExpiresAt   = "expires_at must be an RFC 3339 time such as 2027-01-31T00:00:00Z"
	msgExpiresPast = "expires_at must be in the future, at most 10 years ahead"
)

// parseExpiry reads approve's optional expiry: expires_in (seconds from
// now, a JSON integer) or expires_at (an RFC 3339 string), not both. It
// returns the instant the key expires, to the millisecond, or the zero time
// when neither is given (the key does not expire). null counts as absent.
func parseExpiry(in, at json.RawMessage, now time.Time) (time.Time, error) {
	in, at = nullAsAbsent(in), nullAsAbsent(at)
	switch {
	case in != nil && at != nil:
		return time.Time{}, badRequest(msgExpiresBoth)
	case in != nil:
		n, err := strconv.ParseInt(string(in), 10, 64) // a JSON integer: no sign, fraction or exponent
		if err != nil || n < 1 || n > int64(maxKeyLifetime/time.Second) || in[0] == '+' {
			return time.Time{}, badRequest(msgExpiresIn)
		}
		return now.Add(time.Duration(n) * time.Second).Truncate(time.Millisecond), nil
	case at != nil:
		var s string
		if err := json.Unmarshal(at, &s); err != nil {
			return time.Time{}, badRequest(msgExpiresAt)
		}
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return time.Time{}, badRequest(msgExpiresAt)
		}
		if !t.After(now) || t.Sub(now) > maxKeyLifetime {
			return time.Time{}, badRequest(msgExpiresPast)
		}
		return t.Truncate(time.Millisecond), nil
	}
	return time.Time{}, nil
}

func nullAsAbsent(v json.RawMessage) json.RawMessage {
	if string(v) == "null" {
		return nil
	}
	return v
}
