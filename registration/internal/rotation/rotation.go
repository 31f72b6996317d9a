// Package rotation gives a key's email, limit and rate to a new key (PUT
// /api/rotate): the new key written and emailed through the outbox, the old
// one given a grace to live (or revoked at once), every step safe to
// repeat, so that a retry after a timeout or a crash answers the same new
// key and queues no second email.
package rotation

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"pesto/registration/internal/keygen"
	"pesto/shared/apikey"
	"pesto/shared/redisconn"
	"pesto/shared/wire"
)

// Rotation's limits.
const (
	// DefaultGrace is how long an old key lives on when no grace is given.
	DefaultGrace = 24 * time.Hour
	// MaxGrace is the longest grace.
	MaxGrace = 365 * 24 * time.Hour
	// memory is how long a rotation is remembered after its grace, so
	// that a retry within it gives the same new key and no new email.
	memory = 24 * time.Hour
)

// ErrRevoked: a revoked key is not rotated, nor a rotation whose new key
// was revoked since. (An unknown key, or one that is not a record, is
// apikey.ErrNotFound.)
var ErrRevoked = errors.New("the key has been revoked")

// MemoryPrefix starts the key that remembers a rotation:
// pesto:{waiting-list}:rotating:<SHA-256 of the old key, hex>, a hash with
// the new key sealed under the server's secret and the old key (token:
// Seal) and, once its email is queued, done. The hash tag keeps it in the
// outbox's cluster slot: queuing the email and marking the rotation done
// are one atomic step. The old key is hashed so that no second copy of a
// live key is kept in a key name, and the new key is sealed so that none is
// kept at rest: only registration (the secret) asked by the holder of the
// old key (the admin's retry) can open it; a reader of Redis who holds the
// old key, leaked, learns nothing.
const MemoryPrefix = wire.OwnPrefix + "{waiting-list}:rotating:"

// MemoryKey is the key that remembers the rotation of old.
func MemoryKey(old string) string {
	sum := sha256.Sum256([]byte(old))
	return MemoryPrefix + hex.EncodeToString(sum[:])
}

// Seal seals the new key of a rotation under a secret of the server's,
// which is never in Redis, and the old key: AES-256-GCM keyed by
// HMAC-SHA256(secret, label ‖ old key). Either alone opens nothing.
type Seal struct {
	secret []byte
}

// NewSeal returns the Seal of secret (config.Config.ServerSecret).
func NewSeal(secret []byte) Seal { return Seal{secret: secret} }

// sealVersion starts every value Seal writes. A value without it was
// sealed by a release before the secret, with the old key alone
// (legacyCipher), and is still opened, so that a rotation remembered
// across the upgrade can be retried.
const sealVersion = "2."

func (s Seal) cipher(old string) cipher.AEAD {
	mac := hmac.New(sha256.New, s.secret)
	mac.Write([]byte("pesto rotation seal\x00" + old))
	return newGCM(mac.Sum(nil))
}

// legacyCipher is the cipher of the values sealed before sealVersion:
// keyed by the SHA-256 of a label and the old key alone.
func legacyCipher(old string) cipher.AEAD {
	key := sha256.Sum256([]byte("pesto rotation seal\x00" + old))
	return newGCM(key[:])
}

func newGCM(key []byte) cipher.AEAD {
	block, _ := aes.NewCipher(key) // a 32-byte key: no error
	aead, _ := cipher.NewGCM(block)
	return aead
}

// seal seals newToken: sealVersion, then base64url(nonce ‖ ciphertext and
// tag).
func (s Seal) seal(old, newToken string) string {
	aead := s.cipher(old)
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(newToken)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return sealVersion + base64.RawURLEncoding.EncodeToString(aead.Seal(nonce, nonce, []byte(newToken), nil))
}

// errSealBroken: a remembered rotation that does not open with this
// server's secret and the old key.
var errSealBroken = errors.New("rotation on record: its new key does not open with the server's secret and the old key")

// Open opens what seal sealed with the same secret and old key (or, for a
// value without sealVersion, what the release before sealed with the old
// key).
func (s Seal) Open(old, sealed string) (string, error) {
	aead := legacyCipher(old)
	if rest, ok := strings.CutPrefix(sealed, sealVersion); ok {
		aead, sealed = s.cipher(old), rest
	}
	b, err := base64.RawURLEncoding.DecodeString(sealed)
	if err != nil || len(b) < aead.NonceSize() {
		return "", errSealBroken
	}
	plain, err := aead.Open(nil, b[:aead.NonceSize()], b[aead.NonceSize():], nil)
	if err != nil {
		return "", errSealBroken
	}
	return string(plain), nil
}

// claimRotationScript records the new key of a rotation (sealed) unless
// one is recorded: returns {sealed new key, done (0 or 1)}.
var claimRotationScript = rueidis.NewLuaScript(`
local rotating_key = KEYS[1]
local candidate = ARGV[1]
local v = redis.call('HMGET', rotating_key, 'token', 'done')
if v[1] then return {v[1], v[2] and 1 or 0} end
redis.call('HSET', rotating_key, 'token', candidate)
return {candidate, 0}
`)

// completeRotationScript queues the new key's email and marks the rotation
// done, once: returns 1 when it queued the email. The memory of the
// rotation then lasts ttl_ms.
var completeRotationScript = rueidis.NewLuaScript(`
local rotating_key, outbox_key = KEYS[1], KEYS[2]
local ttl_ms = ARGV[1]
-- ARGV[2] onwards: the email's stream fields
if redis.call('HGET', rotating_key, 'done') then return 0 end
redis.call('XADD', outbox_key, '*', unpack(ARGV, 2))
redis.call('HSET', rotating_key, 'done', '1')
redis.call('PEXPIRE', rotating_key, ttl_ms)
return 1
`)

// Store is the Redis side of rotations.
type Store struct {
	conn *redisconn.Conn
	keys apikey.Keys // records, in either form; new ones in the configured form
	seal Seal        // of the memory of a rotation
}

// New returns the rotations of keys on conn, remembered under seal.
func New(conn *redisconn.Conn, keys apikey.Keys, seal Seal) *Store {
	return &Store{conn: conn, keys: keys, seal: seal}
}

// Rotate gives the email, limit and rate of the key old to a new key and
// winds old down. Its steps, each safe to repeat, so that a retry after a
// crash (or a plain retry) completes the first attempt with its new key and
// one email:
//
//  1. the new key is chosen and remembered under MemoryKey(old);
//  2. its record is written (SET NX), with old's expiry if old expires;
//  3. old is revoked (grace 0) or given grace to live (shortenTTLScript: a
//     retry never pushes it forward, nor an earlier expiry it already had);
//  4. the email is queued and the rotation marked done, in one atomic step.
//
// A revoked or unknown old key is refused (ErrRevoked, apikey.ErrNotFound),
// unless it is the old key of a rotation on record: then the rotation is
// completed, or answered again with its new key, as long as that key lives. Once the new key is
// revoked, or gone after its email was queued, rotating old again is
// refused (ErrRevoked, apikey.ErrNotFound) and changes nothing.
func (s *Store) Rotate(ctx context.Context, old string, grace time.Duration) (string, error) {
	c, err := s.conn.Client()
	if err != nil {
		return "", err
	}
	remembered := MemoryKey(old)
	claim, err := c.Do(ctx, c.B().Hmget().Key(remembered).Field("token", "done").Build()).ToArray()
	if err != nil {
		return "", err
	}
	ongoing, _ := claim[0].ToString()
	done, _ := claim[1].ToString() // "1" once its email is queued
	if ongoing != "" {
		if ongoing, err = s.seal.Open(old, ongoing); err != nil {
			return "", err
		}
	}

	oldForms, err := s.keys.Find(ctx, c, old)
	if err != nil {
		return "", err
	}
	rec, taken := oldForms.Record()
	switch {
	case ongoing != "":
		// A rotation on record: old may be revoked or gone by now; the new
		// key's record tells the email and the limit.
	case !taken:
		return "", apikey.ErrNotFound
	case rec == nil:
		return "", apikey.ErrNotFound // a key, but not a readable record
	case rec.Revoked:
		return "", ErrRevoked
	}

	var newToken string
	if ongoing != "" {
		newToken = ongoing
	} else {
		res, err := claimRotationScript.Exec(ctx, c, []string{remembered}, []string{s.seal.seal(old, keygen.Approved())}).ToArray()
		if err != nil {
			return "", err
		}
		sealed, err := res[0].ToString()
		if err != nil {
			return "", err
		}
		if newToken, err = s.seal.Open(old, sealed); err != nil {
			return "", err
		}
	}

	written, newTaken, err := s.keys.Record(ctx, c, newToken)
	if err != nil {
		return "", err
	}
	switch {
	case newTaken && (written == nil || rec != nil && !wire.SamePerson(written.UserEmail, rec.UserEmail)):
		// Someone else's key (a generated key drawn twice): forget this
		// claim; the admin's retry draws another.
		_ = c.Do(ctx, c.B().Del().Key(remembered).Build()).Error()
		return "", keygen.ErrCollision
	case ongoing != "" && newTaken && written.Revoked:
		// The rotation's new key was revoked since: it is not handed out
		// again, and old keeps the grace it was given.
		return "", ErrRevoked
	case ongoing != "" && !newTaken && done != "":
		// The rotation's new key was deleted (or expired) since it was
		// emailed: it is not written again.
		return "", apikey.ErrNotFound
	case !newTaken && rec == nil:
		// The rotation on record lost its new record and old is gone:
		// nothing is left to rotate.
		_ = c.Do(ctx, c.B().Del().Key(remembered).Build()).Error()
		return "", apikey.ErrNotFound
	case !newTaken:
		fresh := wire.TokenRecord{UserEmail: rec.UserEmail, MonthlyLimit: rec.MonthlyLimit, Rate: rec.Rate}
		left, err := oldForms.TTL(ctx, c)
		if err != nil {
			return "", err
		}
		var exp apikey.Expiry
		if left > 0 { // old expires: so does its successor, when old would have
			exp = apikey.In(left)
		}
		if _, err := s.keys.Create(ctx, c, newToken, fresh, exp); err != nil {
			return "", err
		}
		written = &fresh
	}

	if rec != nil && !rec.Revoked {
		// In every form old has (a Cluster's migrate-keys may hold both for
		// a moment), so that either form read first is right.
		if grace == 0 {
			_, err = oldForms.Revoke(ctx, c)
		} else {
			err = oldForms.ShortenTTL(ctx, c, grace)
		}
		if err != nil {
			return "", err
		}
	}

	mail := wire.KeyEmail{To: written.UserEmail, Name: written.UserEmail, Token: newToken, Limit: written.MonthlyLimit}
	memory := strconv.FormatInt((grace + memory).Milliseconds(), 10)
	err = completeRotationScript.Exec(ctx, c, []string{remembered, wire.OutboxStream}, append([]string{memory}, mail.Fields()...)).Error()
	return newToken, err
}
