package main

import (
	"context"
	"fmt"
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

// counterScript counts up to n calls atomically, so that a limit of N allows
// exactly N calls whatever the number of racing callers and replicas. The
// TTL is set when the counter is created, never pushed forward.
// KEYS[1] counter, ARGV[1] limit, ARGV[2] TTL in seconds, ARGV[3] n. Returns
// {calls counted before, calls counted now}: the second is min(n, limit -
// before), or 0 (and nothing is written) when the limit is reached.
var counterScript = rueidis.NewLuaScript(`
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local granted = math.min(tonumber(ARGV[3]), tonumber(ARGV[1]) - used)
if granted <= 0 then return {used, 0} end
local after = redis.call('INCRBY', KEYS[1], granted)
if after == granted then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return {after - granted, granted}
`)

var counterTTL = strconv.FormatInt(int64(wire.CounterTTL/time.Second), 10)

type redisStore struct {
	conn     *redisconn.Conn
	cacheTTL time.Duration
	counts   *coalescer
}

func newRedisStore(conn *redisconn.Conn, cacheTTL time.Duration) *redisStore {
	s := &redisStore{conn: conn, cacheTTL: cacheTTL}
	s.counts = newCoalescer(s.countN)
	return s
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

// Count counts one call; concurrent calls of one key share a script call.
func (s *redisStore) Count(ctx context.Context, key string, limit int64) (int64, bool, error) {
	return s.counts.Count(ctx, key, limit)
}

func (s *redisStore) countN(ctx context.Context, key string, limit, n int64) (before, granted int64, err error) {
	c, err := s.conn.Client()
	if err != nil {
		return 0, 0, err
	}
	reply, err := counterScript.Exec(ctx, c, []string{key},
		[]string{strconv.FormatInt(limit, 10), counterTTL, strconv.FormatInt(n, 10)}).ToArray()
	if err != nil {
		return 0, 0, err
	}
	if len(reply) != 2 {
		return 0, 0, fmt.Errorf("counter script: %d values", len(reply))
	}
	if before, err = reply[0].AsInt64(); err == nil {
		granted, err = reply[1].AsInt64()
	}
	return before, granted, err
}

func (s *redisStore) Ping(ctx context.Context) error {
	return s.conn.Ping(ctx, time.Second)
}
