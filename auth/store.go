package main

import (
	"context"
	"hash/maphash"
	"log/slog"
	"strings"
	"sync"
	"time"

	"pesto/shared/apikey"
	"pesto/shared/redisconn"
	"pesto/shared/wire"
)

// tokenStore is what the decision needs of Redis.
type tokenStore interface {
	// Record returns the raw value stored under token, apikey.ErrNotFound
	// when there is none, and whether it came from the client-side cache.
	Record(ctx context.Context, token string) (raw string, cached bool, err error)
	// Count counts one call against limit on the counter key in one atomic
	// step: it returns the calls counted after this one and true, or false
	// (and counts nothing) when limit calls were already counted.
	Count(ctx context.Context, key string, limit int64) (used int64, allowed bool, err error)
	// Ping checks that Redis answers.
	Ping(ctx context.Context) error
}

var _ tokenStore = (*redisStore)(nil)

type redisStore struct {
	conn     *redisconn.Conn // records, through the client-side cache
	counters *redisconn.Conn // counting (see counterOptions)
	cacheTTL time.Duration
	keys     apikey.Keys // records, in either form
	counts   *quota
	log      *slog.Logger
	onLost   func(key string, n int64, err error) // a refund that failed

	seenMu   sync.Mutex
	seen     map[uint64]int64 // seenHash of a counter key → its value in the last reply
	seenSeed maphash.Seed
}

func newRedisStore(conn, counters *redisconn.Conn, cacheTTL time.Duration, storage wire.KeyStorage, log *slog.Logger) *redisStore {
	s := &redisStore{conn: conn, counters: counters, cacheTTL: cacheTTL, keys: apikey.Keys{Storage: storage, Log: log}, log: log,
		seen: map[uint64]int64{}, seenSeed: maphash.MakeSeed()}
	s.onLost = func(_ string, n int64, err error) {
		log.Error("refund of calls not answered 200 failed: the counter keeps them", "calls", n, "err", err.Error())
	}
	s.counts = newQuota(s.countBatch, s.refund, s.groupOf, s.onLost)
	return s
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
func (s *redisStore) Count(ctx context.Context, key string, limit int64) (int64, bool, error) {
	return s.counts.Count(ctx, key, limit)
}

func (s *redisStore) Ping(ctx context.Context) error {
	return s.conn.Ping(ctx, time.Second)
}

// hashSlot is Redis Cluster's slot of key: CRC16 (XMODEM) of the key, or of
// its hash tag ({…}) when it has a non-empty one, modulo 16384.
func hashSlot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for b := 0; b < 8; b++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc & 16383
}
