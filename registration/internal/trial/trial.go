// Package trial makes trial keys (SPEC §1): TRIAL- and 58 characters of
// [A-Za-z0-9], the record of an email trial-<20 characters>@<domain> with
// a monthly limit of 10, expiring after 24 hours.
package trial

import (
	"context"

	"pesto/registration/internal/keygen"
	"pesto/shared/apikey"
	"pesto/shared/redisconn"
	"pesto/shared/wire"
)

// Shape of a trial key.
const (
	prefix     = "TRIAL-"
	tokenChars = 58
)

// Create stores a new trial key in storage's form: SET NX with a TTL
// of a day. A collision (astronomically unlikely) draws another key.
func Create(ctx context.Context, conn *redisconn.Conn, storage wire.KeyStorage, domain string) (string, error) {
	c, err := conn.Client()
	if err != nil {
		return "", err
	}
	for range 3 {
		token := prefix + keygen.Random(tokenChars)
		rec := wire.TokenRecord{
			UserEmail:    wire.TrialEmailPrefix + keygen.Random(wire.TrialEmailChars) + "@" + domain,
			MonthlyLimit: wire.TrialMonthlyLimit,
		}
		created, err := apikey.Keys{Storage: storage}.Create(ctx, c, token, rec, apikey.In(wire.TrialTTL))
		if err == nil && !created {
			continue
		}
		return token, err
	}
	return "", keygen.ErrCollision
}
