package apikey

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"pesto/shared/wire"
)

// Expiry is when a created record expires; the zero Expiry is never.
type Expiry struct {
	at time.Time
	in time.Duration
}

// At is an Expiry at t (to the millisecond).
func At(t time.Time) Expiry { return Expiry{at: t} }

// In is an Expiry d from when the record is written (to the millisecond).
func In(d time.Duration) Expiry { return Expiry{in: d} }

// Create writes rec under token's name in Storage's form, with the expiry,
// unless that name exists (SET NX): created is false when it does, and then
// nothing is written. Whether the key exists in the other form is the
// caller's to ask first (Record).
func (k Keys) Create(ctx context.Context, c rueidis.Client, token string, rec wire.TokenRecord, exp Expiry) (created bool, err error) {
	name, value := k.Storage.RecordKey(token), rueidis.BinaryString(rec.Encode())
	var set rueidis.Completed
	switch {
	case !exp.at.IsZero():
		set = c.B().Set().Key(name).Value(value).Nx().Pxat(exp.at).Build()
	case exp.in > 0 && exp.in%time.Second == 0:
		set = c.B().Set().Key(name).Value(value).Nx().Ex(exp.in).Build()
	case exp.in > 0:
		set = c.B().Set().Key(name).Value(value).Nx().PxMilliseconds(exp.in.Milliseconds()).Build()
	default:
		set = c.B().Set().Key(name).Value(value).Nx().Build()
	}
	if k.Storage == wire.StorageHashed {
		// The marker first, in the same round trip: a service with plain
		// storage looks at hashed names only once it exists.
		res := c.DoMulti(ctx, markHashed(c), set)
		if err := res[0].Error(); err != nil {
			return false, err
		}
		err = res[1].Error()
	} else {
		err = c.Do(ctx, set).Error()
	}
	if rueidis.IsRedisNil(err) {
		return false, nil
	}
	return err == nil, err
}

// markHashed sets wire.HashedKeysMarker: hashed records may exist.
func markHashed(c rueidis.Client) rueidis.Completed {
	return c.B().Set().Key(wire.HashedKeysMarker).Value("1").Build()
}

// MarkHashed sets wire.HashedKeysMarker, as every writer of a hashed record
// does first (Create with hashed storage, Move): a service with plain
// storage then looks up hashed names too.
func MarkHashed(ctx context.Context, c rueidis.Client) error {
	return c.Do(ctx, markHashed(c)).Error()
}

// Revoke sets Revoked on token's record in every form it has, keeping each
// form's email, limit and TTL. ErrNotFound when the key has no record (none,
// or its first form is not a string; or every form went meanwhile); a first
// form that is not a token record is its decoding error (wire.ErrCorrupt).
func (k Keys) Revoke(ctx context.Context, c rueidis.Client, token string) error {
	found, err := k.Find(ctx, c, token)
	if err != nil {
		return err
	}
	if len(found) == 0 || found[0].NotString {
		return ErrNotFound
	}
	n, err := found.Revoke(ctx, c)
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound // expired or deleted meanwhile
	}
	return nil
}

// Revoke sets Revoked in every form of f that holds a token record (SET XX
// KEEPTTL: email, limit and TTL kept; a form gone meanwhile stays gone) and
// returns how many it revoked. A first form that is not a token record is
// its decoding error; a later one is left alone.
func (f Found) Revoke(ctx context.Context, c rueidis.Client) (revoked int, err error) {
	for i, form := range f {
		if form.NotString {
			continue
		}
		rec, err := wire.DecodeTokenRecord(form.Raw)
		if err != nil {
			if i == 0 {
				return revoked, err
			}
			continue
		}
		rec.Revoked = true
		err = c.Do(ctx, c.B().Set().Key(form.Name).Value(rueidis.BinaryString(rec.Encode())).Xx().Keepttl().Build()).Error()
		switch {
		case rueidis.IsRedisNil(err): // expired, deleted or moved meanwhile
		case err != nil:
			return revoked, err
		default:
			revoked++
		}
	}
	return revoked, nil
}

// shortenTTLScript sets a key's TTL to ARGV[1] ms unless it already
// expires sooner (PEXPIRE's LT option, which Redis 6 lacks).
var shortenTTLScript = rueidis.NewLuaScript(`
local key = KEYS[1]
local ttl_ms = tonumber(ARGV[1])
local left = redis.call('PTTL', key)
if left == -1 or left > ttl_ms then return redis.call('PEXPIRE', key, ttl_ms) end
return 0
`)

// ShortenTTL gives every string form of f at most ttl to live: a form that
// expires sooner keeps its expiry, so repeating it never pushes one forward.
func (f Found) ShortenTTL(ctx context.Context, c rueidis.Client, ttl time.Duration) error {
	for _, form := range f {
		if form.NotString {
			continue
		}
		if err := shortenTTLScript.Exec(ctx, c, []string{form.Name}, []string{strconv.FormatInt(ttl.Milliseconds(), 10)}).Error(); err != nil {
			return err
		}
	}
	return nil
}

// TTL returns how long the first form of f has left to live: 0 when it
// does not expire, or is gone.
func (f Found) TTL(ctx context.Context, c rueidis.Client) (time.Duration, error) {
	if len(f) == 0 {
		return 0, nil
	}
	ms, err := c.Do(ctx, c.B().Pttl().Key(f[0].Name).Build()).AsInt64()
	if err != nil || ms < 0 {
		return 0, err
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// deleteIfScript deletes KEYS[1] while it holds ARGV[1]: 1 deleted, 0 it
// holds something else, -1 it is gone.
var deleteIfScript = rueidis.NewLuaScript(`
local record_key = KEYS[1]
local expected = ARGV[1]
local v = redis.call('GET', record_key)
if not v then return -1 end
if v == expected then return redis.call('DEL', record_key) end
return 0
`)

// deleteIf runs deleteIfScript.
func deleteIf(ctx context.Context, c rueidis.Client, name, expected string) (int64, error) {
	return deleteIfScript.Exec(ctx, c, []string{name}, []string{expected}).AsInt64()
}

// DeleteIfOwner deletes every form of token that holds a record of email
// (wire.SamePerson), each only while it still holds what was read, so that
// a record rewritten meanwhile (revoked, or someone else's) is kept.
// deleted is whether it deleted one.
func (k Keys) DeleteIfOwner(ctx context.Context, c rueidis.Client, token, email string) (deleted bool, err error) {
	found, err := k.Find(ctx, c, token)
	if err != nil {
		return false, err
	}
	for _, f := range found {
		if f.NotString {
			continue // not a record, so not theirs
		}
		rec, derr := wire.DecodeTokenRecord(f.Raw)
		if derr != nil || !wire.SamePerson(rec.UserEmail, email) {
			continue // someone else's key
		}
		n, err := deleteIf(ctx, c, f.Name, f.Raw)
		if err != nil {
			return deleted, err
		}
		if n == 1 {
			deleted = true
		}
	}
	return deleted, nil
}
