package main

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"pesto/shared/apikey"
	"pesto/shared/ratelimit"
	"pesto/shared/redisconn"
	"pesto/shared/wire"
)

// tokenStore is what the decision needs of Redis.
type tokenStore interface {
	// Record returns the raw value stored under token, apikey.ErrNotFound
	// when there is none, and whether it came from the client-side cache.
	Record(ctx context.Context, token string) (raw string, cached bool, err error)
	// Count counts one call under pol on the counter key in one atomic
	// step: allowed, with the calls counted after this one, or refused (and
	// nothing counted) when the limit was reached.
	Count(ctx context.Context, key string, pol policy) (verdict, error)
	// Ping checks that Redis answers.
	Ping(ctx context.Context) error
}

var _ tokenStore = (*redisStore)(nil)

// redisStore is auth's Redis: records through the client-side cache
// (apikey), calls counted by group commit on a connection of their own
// (groupCommit, redisCounter), and what GET /api/usage and the quota warnings need.
type redisStore struct {
	conn     *redisconn.Conn // records, through the client-side cache
	cacheTTL time.Duration
	keys     apikey.Keys // records, in either form
	counts   *groupCommit
}

func newRedisStore(conn, counters *redisconn.Conn, cacheTTL time.Duration, storage wire.KeyStorage, log *slog.Logger) *redisStore {
	k := newRedisCounter(counters, log)
	return &redisStore{conn: conn, cacheTTL: cacheTTL, keys: apikey.Keys{Storage: storage, Log: log},
		counts: newGroupCommit(k.countBatch, k.refund, k.groupOf, k.onLost)}
}

// Record finds token's record in either form, through the client-side
// cache, and moves a plaintext one with hashed storage (apikey.Keys.Lookup).
func (s *redisStore) Record(ctx context.Context, token string) (string, bool, error) {
	c, err := s.conn.Client()
	if err != nil {
		return "", false, err
	}
	return s.keys.Lookup(ctx, c, token, s.cacheTTL)
}

// Count counts one call; concurrent calls share a script call.
func (s *redisStore) Count(ctx context.Context, key string, pol policy) (verdict, error) {
	return s.counts.Count(ctx, key, pol)
}

func (s *redisStore) Ping(ctx context.Context) error {
	return s.conn.Ping(ctx, time.Second)
}

// accountStore is what GET /api/usage needs of Redis, besides the hook's
// tokenStore.
type accountStore interface {
	// RecordTTL returns the raw value stored under token, read without the
	// client-side cache, and its time to live (0: none); apikey.ErrNotFound
	// when there is none.
	RecordTTL(ctx context.Context, token string) (raw string, ttl time.Duration, err error)
	// Used returns the calls counted on the counter key (0 when it does
	// not exist). It counts nothing.
	Used(ctx context.Context, key string) (int64, error)
	// RateLeft returns how many calls rate lets through now on the counter
	// key's window, and the time until that grows. It spends nothing.
	RateLeft(ctx context.Context, key string, rate wire.Rate) (left int64, wait time.Duration, err error)
	// Allow counts one request against the rate limit buckets of keys
	// (ratelimit.Allow) and returns 0, or the milliseconds to wait.
	Allow(ctx context.Context, keys, args []string) (int64, error)
	// QueueWarning queues a quota warning in the outbox unless its marker
	// (wire.QuotaWarning.WarnedKey) is set, and sets it, in one atomic
	// step; queued is false when the marker was set.
	QueueWarning(ctx context.Context, w wire.QuotaWarning) (queued bool, err error)
}

var _ accountStore = (*redisStore)(nil)

// RecordTTL reads the record and its TTL with plain commands, in either
// form (apikey.Keys.LookupTTL): a key holder asking about their key sees
// what Redis holds.
func (s *redisStore) RecordTTL(ctx context.Context, token string) (string, time.Duration, error) {
	c, err := s.conn.Client()
	if err != nil {
		return "", 0, err
	}
	return s.keys.LookupTTL(ctx, c, token)
}

// Used reads a counter with a plain GET (counters are never cached).
func (s *redisStore) Used(ctx context.Context, key string) (int64, error) {
	c, err := s.conn.Client()
	if err != nil {
		return 0, err
	}
	n, err := c.Do(ctx, c.B().Get().Key(key).Build()).AsInt64()
	if rueidis.IsRedisNil(err) {
		return 0, nil
	}
	return n, err
}

// RateLeft reads the counter's rate window (HGETALL; window).
func (s *redisStore) RateLeft(ctx context.Context, key string, rate wire.Rate) (int64, time.Duration, error) {
	c, err := s.conn.Client()
	if err != nil {
		return 0, 0, err
	}
	window := rateWindowKey(key, c.Mode() == rueidis.ClientModeCluster)
	fields, err := c.Do(ctx, c.B().Hgetall().Key(window).Build()).AsStrMap()
	if err != nil {
		return 0, 0, err
	}
	w := readWindow(fields, rate, time.Now().UnixMicro())
	return w.room(rate), w.wait(rate), nil
}

// Allow runs the shared rate limit script.
func (s *redisStore) Allow(ctx context.Context, keys, args []string) (int64, error) {
	c, err := s.conn.Client()
	if err != nil {
		return 0, err
	}
	return ratelimit.Allow(ctx, c, keys, args)
}

// warnScript queues a warning unless its marker is set, and sets the
// marker, in one atomic step. KEYS: the marker, the outbox stream; ARGV:
// the marker's TTL in seconds, then the entry's fields. Returns 1 when
// queued, 0 when the marker was set.
var warnScript = rueidis.NewLuaScript(`
local marker_key, outbox_key = KEYS[1], KEYS[2]
local marker_ttl_seconds = ARGV[1]
-- ARGV[2] onwards: the entry's fields
if redis.call('SET', marker_key, '1', 'NX', 'EX', marker_ttl_seconds) then
  redis.call('XADD', outbox_key, '*', unpack(ARGV, 2))
  return 1
end
return 0
`)

var warnedTTL = strconv.FormatInt(int64(wire.CounterTTL/time.Second), 10)

// QueueWarning runs warnScript for q.
func (s *redisStore) QueueWarning(ctx context.Context, q wire.QuotaWarning) (bool, error) {
	c, err := s.conn.Client()
	if err != nil {
		return false, err
	}
	n, err := warnScript.Exec(ctx, c, []string{q.WarnedKey(), wire.OutboxStream}, append([]string{warnedTTL}, q.Fields()...)).AsInt64()
	return n == 1, err
}
