package main

import (
	"context"

	"github.com/redis/rueidis"

	"pesto/shared/wire"
)

// A key's record may be stored in either form (KEY_STORAGE): under the key
// itself (plain, the old services' format) or under wire.HashedKey (hashed).
// New keys are written in the configured form only; every read, revoke and
// rotate looks at both, and a change is written to every form that holds
// the key (a Cluster's migrate-keys may hold both for a moment: see
// shared/apikey), so that whichever form a reader sees first is right.

// keyForm is one stored form of a key.
type keyForm struct {
	name string // the Redis key: the token itself, or its hashed name
	raw  string // the value
	// notString: the name holds a key of another type (WRONGTYPE): a key,
	// but no record.
	notString bool
}

// forms returns the forms of token that exist, in storage's order (its own
// form first), read with plain GETs in one round trip.
func forms(ctx context.Context, c rueidis.Client, storage wire.KeyStorage, token string) ([]keyForm, error) {
	names := storage.RecordKeys(token)
	res := c.DoMulti(ctx, c.B().Get().Key(names[0]).Build(), c.B().Get().Key(names[1]).Build())
	out := make([]keyForm, 0, 2)
	for i, r := range res {
		raw, err := r.ToString()
		switch {
		case rueidis.IsRedisNil(err):
			continue
		case err != nil:
			if _, ok := rueidis.IsRedisErr(err); ok {
				out = append(out, keyForm{name: names[i], notString: true})
				continue
			}
			return nil, err
		}
		out = append(out, keyForm{name: names[i], raw: raw})
	}
	return out, nil
}
