package apikey

// Moves: a record from its plaintext form (the token itself is the Redis
// key, SPEC §1) to its hashed form (wire.HashedKey), value and TTL copied
// and the plaintext deleted. auth moves the plaintext records it finds with
// KEY_STORAGE=hashed (Keys.Lookup); registration's migrate-keys moves them
// all.
//
// On a single Redis (and behind Sentinel) a move is one Lua script, so it
// is atomic: a reader sees the record under one name or the other, never
// both and never neither, and two movers racing move it once. On a Redis
// Cluster the two names are in different hash slots and no script may
// touch both; there a move is two steps (MoveTwoStep): copy, then delete
// the plaintext only while it still holds what was copied. Between the
// steps both forms hold the same record, so a reader that looks at both
// never misses it.

import (
	"context"
	"errors"

	"github.com/redis/rueidis"

	"pesto/shared/wire"
)

// moveScript moves the string under KEYS[1] (the token) to KEYS[2] (its
// hashed name) with its remaining TTL, sets KEYS[3] (wire.HashedKeysMarker)
// and returns 1; 0 when there is no
// string under the token (moved already, or never there). When both exist
// the plaintext's value wins: registration writes every form of a key it
// changes, so the plaintext holds at least what the hashed copy does.
var moveScript = rueidis.NewLuaScript(`
local plain, hashed, marker = KEYS[1], KEYS[2], KEYS[3]
if redis.call('TYPE', plain).ok ~= 'string' then return 0 end
redis.call('SET', marker, '1')
local v = redis.call('GET', plain)
local ttl = redis.call('PTTL', plain)
if ttl > 0 then
  redis.call('SET', hashed, v, 'PX', ttl)
else
  redis.call('SET', hashed, v)
end
redis.call('DEL', plain)
return 1
`)

// Atomic reports whether c moves a key in one atomic step (Move): true but
// on a Redis Cluster.
func Atomic(c rueidis.Client) bool {
	return c.Mode() != rueidis.ClientModeCluster
}

// Move moves token's plaintext record to its hashed form, in one atomic
// step on a single Redis, in two on a Cluster (MoveTwoStep). moved is false
// when there was no plaintext record to move. The caller checks that the
// value is a token record before it asks.
func Move(ctx context.Context, c rueidis.Client, token string) (moved bool, err error) {
	if !Atomic(c) {
		return MoveTwoStep(ctx, c, token)
	}
	n, err := moveScript.Exec(ctx, c, []string{token, wire.HashedKey(token), wire.HashedKeysMarker}, nil).AsInt64()
	return n == 1, err
}

// errChurn: the plaintext record changed under every attempt to move it.
var errChurn = errors.New("the plaintext record kept changing while it was moved")

// moveAttempts bounds the retries of a two-step move whose plaintext
// changed between the steps.
const moveAttempts = 5

// MoveTwoStep moves token's plaintext record to its hashed form where one
// script cannot reach both (a Redis Cluster): it reads the value and TTL,
// writes them under the hashed name, then deletes the plaintext only while
// it still holds that value. A plaintext changed in between (revoked,
// rotated: registration writes every form, so the copy is stale) is copied
// again, and a reader of both forms, hashed first, may see the stale copy
// for the one round trip the move takes to notice. A plaintext gone in
// between was moved by a racing mover, or deleted: the two cannot be told
// apart from its slot, so the copy is kept (a record is never lost; one
// deleted during its own move survives hashed). Repeating a move is
// harmless.
func MoveTwoStep(ctx context.Context, c rueidis.Client, token string) (bool, error) {
	hashed := wire.HashedKey(token)
	if err := MarkHashed(ctx, c); err != nil {
		return false, err
	}
	for range moveAttempts {
		res := c.DoMulti(ctx, c.B().Get().Key(token).Build(), c.B().Pttl().Key(token).Build())
		v, err := res[0].ToString()
		if rueidis.IsRedisNil(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		ttl, err := res[1].AsInt64()
		if err != nil {
			return false, err
		}
		if ttl == -2 {
			return false, nil // gone between the two commands
		}
		set := c.B().Set().Key(hashed).Value(v).Build()
		if ttl > 0 {
			set = c.B().Set().Key(hashed).Value(v).PxMilliseconds(ttl).Build()
		}
		if err := c.Do(ctx, set).Error(); err != nil {
			return false, err
		}
		n, err := deleteIf(ctx, c, token, v)
		if err != nil {
			return false, err
		}
		switch n {
		case 1:
			return true, nil
		case -1: // moved by another mover meanwhile (or deleted)
			return false, nil
		}
	}
	return false, errChurn
}
