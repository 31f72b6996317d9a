package main

import (
	"context"
	"errors"
	"time"

	"github.com/redis/rueidis"

	"pesto/shared/redisconn"
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

// errMissing: no record under the token (errors.go answers it 401 Token
// not registered).
var errMissing = errors.New("no record under the token")

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

func (s *redisStore) Ping(ctx context.Context) error {
	return s.conn.Ping(ctx, time.Second)
}
