package main

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"pesto/shared/redisconn"
	"pesto/shared/wire"
)

// tokenStore is what the decision needs of Redis.
type tokenStore interface {
	// Record returns the raw value stored under token, errMissing when
	// there is none, and whether it came from the client-side cache.
	Record(ctx context.Context, token string) (raw string, cached bool, err error)
	// Count counts one call against limit on the counter key in one atomic
	// step: it returns the calls counted after this one and true, or false
	// (and counts nothing) when limit calls were already counted.
	Count(ctx context.Context, key string, limit int64) (used int64, allowed bool, err error)
	// Ping checks that Redis answers.
	Ping(ctx context.Context) error
}

var _ tokenStore = (*redisStore)(nil)

// errMissing: no record under the token.
var errMissing = errNotRegistered

// counterScript checks and counts one call atomically, so that a limit of N
// allows exactly N calls whatever the number of racing callers and replicas.
// The TTL is set when the counter is created, never pushed forward.
// KEYS[1] counter, ARGV[1] limit, ARGV[2] TTL in seconds. Returns the calls
// counted after this one, or -1 when the limit was already reached.
var counterScript = rueidis.NewLuaScript(`
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then return -1 end
used = redis.call('INCR', KEYS[1])
if used == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return used
`)

var counterTTL = strconv.FormatInt(int64(wire.CounterTTL/time.Second), 10)

type redisStore struct {
	conn     *redisconn.Conn
	cacheTTL time.Duration
}

func (s *redisStore) Record(ctx context.Context, token string) (string, bool, error) {
	c, err := s.conn.Client()
	if err != nil {
		return "", false, err
	}
	// With the cache off (TTL 0) the client was made with DisableCache and
	// DoCache is a plain GET.
	res := c.DoCache(ctx, c.B().Get().Key(token).Cache(), max(s.cacheTTL, time.Second))
	raw, err := res.ToString()
	if rueidis.IsRedisNil(err) {
		return "", res.IsCacheHit(), errMissing
	}
	return raw, res.IsCacheHit(), err
}

func (s *redisStore) Count(ctx context.Context, key string, limit int64) (int64, bool, error) {
	c, err := s.conn.Client()
	if err != nil {
		return 0, false, err
	}
	used, err := counterScript.Exec(ctx, c, []string{key}, []string{strconv.FormatInt(limit, 10), counterTTL}).AsInt64()
	if err != nil {
		return 0, false, err
	}
	if used < 0 {
		return 0, false, nil
	}
	return used, true, nil
}

func (s *redisStore) Ping(ctx context.Context) error {
	return s.conn.Ping(ctx, time.Second)
}
