package main

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"pesto/shared/apikey"
	"pesto/shared/logging"
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

// errMissing: no record under the token (errors.go answers it 401 Token
// not registered).
var errMissing = errors.New("no record under the token")

type redisStore struct {
	conn     *redisconn.Conn // records, through the client-side cache
	counters *redisconn.Conn // counting (see counterOptions)
	cacheTTL time.Duration
	storage  wire.KeyStorage // which form of a record is looked up first, and whether plaintext ones are moved
	counts   *quota
	log      *slog.Logger
	onLost   func(key string, n int64, err error) // a refund that failed

	seenMu   sync.Mutex
	seen     map[uint64]int64 // seenHash of a counter key → its value in the last reply
	seenSeed maphash.Seed
}

func newRedisStore(conn, counters *redisconn.Conn, cacheTTL time.Duration, storage wire.KeyStorage, log *slog.Logger) *redisStore {
	s := &redisStore{conn: conn, counters: counters, cacheTTL: cacheTTL, storage: storage, log: log,
		seen: map[uint64]int64{}, seenSeed: maphash.MakeSeed()}
	s.onLost = func(_ string, n int64, err error) {
		log.Error("refund of calls not answered 200 failed: the counter keeps them", "calls", n, "err", err.Error())
	}
	s.counts = newQuota(s.countBatch, s.refund, s.groupOf, s.onLost)
	return s
}

// Record finds token's record in either form (wire.KeyStorage.RecordKeys):
// with KEY_STORAGE=plain the plaintext first (one lookup, as before, while
// most keys are plaintext), with hashed the hashed form first. Every lookup
// goes through the client-side cache, so both forms are cached and
// invalidated alike, and an unknown key costs two lookups, both cached.
//
// With hashed storage, a plaintext record found is moved to its hashed
// form (apikey.Move, on a single Redis; on a Cluster registration's
// migrate-keys moves them). A move may happen between this call's two
// lookups (another replica's, or migrate-keys'): the hashed form is then
// read once more when the plaintext was missing, normally from the cache,
// where the move's invalidation has already dropped it, so that no call
// finds its key in neither form.
func (s *redisStore) Record(ctx context.Context, token string) (string, bool, error) {
	c, err := s.conn.Client()
	if err != nil {
		return "", false, err
	}
	// The order of wire.KeyStorage.RecordKeys, the other form's name made
	// only when the first is missing: with plain storage a call on a key
	// found where it is costs no hash.
	first := s.storage.RecordKey(token)
	raw, cached, err := s.lookup(ctx, c, first)
	if !errors.Is(err, errMissing) {
		return raw, cached, err
	}
	other := token
	if first == token {
		other = wire.HashedKey(token)
	}
	raw, cached2, err := s.lookup(ctx, c, other)
	cached = cached && cached2
	if s.storage != wire.StorageHashed {
		return raw, cached, err
	}
	switch {
	case err == nil:
		s.move(ctx, c, token, raw)
	case errors.Is(err, errMissing):
		var cached3 bool
		raw, cached3, err = s.lookup(ctx, c, first)
		cached = cached && cached3
	}
	return raw, cached, err
}

// lookup reads the record under one name through the client-side cache.
func (s *redisStore) lookup(ctx context.Context, c rueidis.Client, name string) (string, bool, error) {
	// With the cache off (TTL 0) the client was made with DisableCache and
	// DoCache is a plain GET.
	res := c.DoCache(ctx, c.B().Get().Key(name).Cache(), max(s.cacheTTL, time.Second))
	raw, err := res.ToString()
	if rueidis.IsRedisNil(err) {
		return "", res.IsCacheHit(), errMissing
	}
	return raw, res.IsCacheHit(), err
}

// move moves the plaintext record of token, found holding raw, to its
// hashed form, on a single Redis: the call goes on with the record it read
// whatever happens (a failed move is tried again by the next call). Only a
// token record is moved; on a Cluster nothing is (apikey: the names are in
// different slots, migrate-keys moves them in two steps).
func (s *redisStore) move(ctx context.Context, c rueidis.Client, token, raw string) {
	if !apikey.Atomic(c) {
		return
	}
	if _, err := wire.DecodeTokenRecord(raw); err != nil {
		return
	}
	moved, err := apikey.Move(ctx, c, token)
	switch {
	case err != nil:
		s.log.Warn("plaintext key not moved to its hashed form", "token", logging.Token(token), "err", err.Error())
	case moved:
		s.log.Debug("plaintext key moved to its hashed form", "token", logging.Token(token))
	}
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
