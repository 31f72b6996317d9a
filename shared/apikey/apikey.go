// Package apikey is the home of a key's record (SPEC §1): the value stored
// under an API key, read and written by both services through it alone.
//
// A record may be stored in either of two forms (KEY_STORAGE): plain, under
// the key itself (the old services' format), or hashed, under
// wire.HashedKey(key). Keys.Storage is the form new records are created in
// and the form looked at first. Whatever it says, both forms are read; a
// change (revoke, a shorter life) is written to every form the key has,
// since a Cluster's migrate-keys may hold both for a moment (Move); and a
// plaintext record is moved to its hashed form by Move.
//
// The one order of lookup: a record is looked for under Storage's own name
// first, then under the other form's name; with hashed storage, when neither
// holds it, under the hashed name once more, since a Move (another replica's,
// or migrate-keys') may have happened between the two looks. So a record
// that exists is found, in one form or the other, whatever moves meanwhile.
// Through the client-side cache (Lookup), plain storage looks at the hashed
// name only once hashed records may exist (wire.HashedKeysMarker, which
// every writer of one sets first), so that where no key was ever hashed an
// unknown key costs one lookup and one entry of Redis's tracking table.
package apikey

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/redis/rueidis"

	"pesto/shared/logging"
	"pesto/shared/wire"
)

// ErrNotFound: the key has no record in either form.
var ErrNotFound = errors.New("no record under the key")

// Keys reads and writes the records of API keys.
type Keys struct {
	// Storage is the form new records are written in, and looked at first.
	Storage wire.KeyStorage
	// Log, when set, is told of the moves Lookup makes (and fails to make).
	Log *slog.Logger
}

// inOrder calls look with the names of token's record, in the one order of
// lookup, until one is not ErrNotFound, and returns what the last returned.
// The other form's name is made only when the first is missing, so that a
// key found in its own form costs no hash. With plain storage and
// hashedMayExist not nil, the hashed name is looked at only when
// hashedMayExist says hashed records may exist.
func (k Keys) inOrder(token string, hashedMayExist func() (bool, error), look func(name string, again bool) error) error {
	first := k.Storage.RecordKey(token)
	if err := look(first, false); !errors.Is(err, ErrNotFound) {
		return err
	}
	other := token
	if first == token {
		if hashedMayExist != nil {
			if may, err := hashedMayExist(); err != nil || !may {
				return cmp.Or(err, ErrNotFound)
			}
		}
		other = wire.HashedKey(token)
	}
	if err := look(other, false); !errors.Is(err, ErrNotFound) || k.Storage != wire.StorageHashed {
		return err
	}
	return look(first, true) // moved between the two looks?
}

// Lookup returns the record stored under token, read through the client's
// client-side cache (ttl, at least a second, bounds how long it is served
// from there), and whether every lookup it made was a cache hit; ErrNotFound
// when there is none. Both forms are cached and invalidated alike, so an
// unknown key costs two lookups, both cached; with plain storage, one while
// wire.HashedKeysMarker does not exist (the marker is read through the
// cache too: its creation is seen at once).
//
// With hashed storage, a plaintext record found is moved to its hashed form
// (Move) on a single Redis; the caller goes on with the record it read,
// whatever happens to the move (a failed move is tried again by the next
// lookup). On a Cluster nothing is moved: there migrate-keys moves records
// in two steps.
func (k Keys) Lookup(ctx context.Context, c rueidis.Client, token string, ttl time.Duration) (raw string, cached bool, err error) {
	cached = true
	ttl = max(ttl, time.Second)
	hashedMayExist := func() (bool, error) {
		res := c.DoCache(ctx, c.B().Get().Key(wire.HashedKeysMarker).Cache(), ttl)
		cached = cached && res.IsCacheHit()
		err := res.Error()
		if rueidis.IsRedisNil(err) {
			return false, nil
		}
		return err == nil, err
	}
	err = k.inOrder(token, hashedMayExist, func(name string, again bool) error {
		res := c.DoCache(ctx, c.B().Get().Key(name).Cache(), ttl)
		cached = cached && res.IsCacheHit()
		var err error
		raw, err = res.ToString()
		if rueidis.IsRedisNil(err) {
			return ErrNotFound
		}
		if err == nil && name == token && k.Storage == wire.StorageHashed {
			k.move(ctx, c, token, raw)
		}
		return err
	})
	return raw, cached, err
}

// move moves the plaintext record of token, found holding raw, to its
// hashed form, on a single Redis. Only a token record is moved.
func (k Keys) move(ctx context.Context, c rueidis.Client, token, raw string) {
	if !Atomic(c) {
		return
	}
	if _, err := wire.DecodeTokenRecord(raw); err != nil {
		return
	}
	moved, err := Move(ctx, c, token)
	switch {
	case k.Log == nil:
	case err != nil:
		k.Log.Warn("plaintext key not moved to its hashed form", "token", logging.Token(token), "err", err.Error())
	case moved:
		k.Log.Debug("plaintext key moved to its hashed form", "token", logging.Token(token))
	}
}

// LookupTTL returns the record stored under token and its time to live (0:
// none), read with plain commands, never the cache: what Redis holds now.
// ErrNotFound when there is none.
func (k Keys) LookupTTL(ctx context.Context, c rueidis.Client, token string) (raw string, ttl time.Duration, err error) {
	err = k.inOrder(token, nil, func(name string, _ bool) error {
		res := c.DoMulti(ctx, c.B().Get().Key(name).Build(), c.B().Pttl().Key(name).Build())
		var err error
		raw, err = res[0].ToString()
		if rueidis.IsRedisNil(err) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		ms, err := res[1].AsInt64()
		if err != nil {
			return err
		}
		if ms == -2 { // gone between the two commands
			return ErrNotFound
		}
		ttl = time.Duration(max(ms, 0)) * time.Millisecond
		return nil
	})
	return raw, ttl, err
}

// Form is one stored form of a key.
type Form struct {
	Name string // the Redis key: the token itself, or its hashed name
	Raw  string // the value
	// NotString: the name holds a key of another type (WRONGTYPE): a key,
	// but no record.
	NotString bool
}

// Found are the forms a key has, in the order of lookup.
type Found []Form

// Find returns the forms of token that exist, in the order of lookup, read
// with plain GETs (never the cache): both names in one round trip, and with
// hashed storage the hashed name once more when neither holds anything.
func (k Keys) Find(ctx context.Context, c rueidis.Client, token string) (Found, error) {
	names := k.Storage.RecordKeys(token)
	res := c.DoMulti(ctx, c.B().Get().Key(names[0]).Build(), c.B().Get().Key(names[1]).Build())
	out := make(Found, 0, 2)
	for i, r := range res {
		f, ok, err := formOf(names[i], r)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, f)
		}
	}
	if len(out) == 0 && k.Storage == wire.StorageHashed {
		f, ok, err := formOf(names[0], c.Do(ctx, c.B().Get().Key(names[0]).Build()))
		if err != nil || !ok {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// formOf reads the reply of a GET of name: ok is false when name holds
// nothing.
func formOf(name string, r rueidis.RedisResult) (f Form, ok bool, err error) {
	raw, err := r.ToString()
	switch {
	case rueidis.IsRedisNil(err):
		return Form{}, false, nil
	case err != nil:
		if _, isReply := rueidis.IsRedisErr(err); isReply {
			return Form{Name: name, NotString: true}, true, nil
		}
		return Form{}, false, err
	}
	return Form{Name: name, Raw: raw}, true, nil
}

// Record is the record of the first form found: taken is whether the key
// exists at all; rec is nil when the first form is not a readable token
// record (another type, or a value of another shape).
func (f Found) Record() (rec *wire.TokenRecord, taken bool) {
	if len(f) == 0 {
		return nil, false
	}
	if f[0].NotString {
		return nil, true
	}
	r, err := wire.DecodeTokenRecord(f[0].Raw)
	if err != nil {
		return nil, true
	}
	return &r, true
}

// Record reads token's record in either form with plain GETs (Find): taken
// is whether the key exists; rec is nil when it is not a readable token
// record.
func (k Keys) Record(ctx context.Context, c rueidis.Client, token string) (rec *wire.TokenRecord, taken bool, err error) {
	found, err := k.Find(ctx, c, token)
	if err != nil {
		return nil, false, err
	}
	rec, taken = found.Record()
	return rec, taken, nil
}
