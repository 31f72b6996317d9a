package wire

import (
	"crypto/sha256"
	"encoding/base64"
	"strings"
)

// HashedKeyPrefix starts the Redis key of a token record stored hashed
// (KEY_STORAGE=hashed): pesto:key:<SHA-256 of the token, base64url without
// padding>. It starts with OwnPrefix, so no hashed key name is a well-formed
// token (WellFormedToken, IsOwnKey): a client cannot name one.
const HashedKeyPrefix = OwnPrefix + "key:"

// HashedKeysMarker exists once any token record may be stored hashed:
// every writer of a hashed record (registration with KEY_STORAGE=hashed,
// a move: auth's, migrate-keys') sets it first, and nothing deletes it. A
// service with plain storage looks up a key's hashed name only while it
// exists, so that an unknown key costs it one lookup, not two, where no key
// was ever hashed.
const HashedKeysMarker = OwnPrefix + "hashed-keys"

// hashedKeyLen is the length of every hashed key name: the prefix and 43
// characters of base64url (256 bits).
const hashedKeyLen = len(HashedKeyPrefix) + 43

// HashedKey returns the Redis key under which token's record is stored
// hashed: pesto:key:<base64url (RFC 4648 §5, no padding) of SHA-256(token)>.
// Keys are 64 random characters, so a fast hash is right (no password
// hashing): whoever reads a dump learns no key from its name.
func HashedKey(token string) string {
	var buf [hashedKeyLen]byte
	return string(AppendHashedKey(buf[:0], token))
}

// AppendHashedKey appends HashedKey(token) to b.
func AppendHashedKey(b []byte, token string) []byte {
	sum := sha256.Sum256([]byte(token))
	b = append(b, HashedKeyPrefix...)
	return base64.RawURLEncoding.AppendEncode(b, sum[:])
}

// IsHashedKey reports whether name has the shape of a hashed key name.
func IsHashedKey(name string) bool {
	if len(name) != hashedKeyLen || !strings.HasPrefix(name, HashedKeyPrefix) {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(name[len(HashedKeyPrefix):])
	return err == nil
}

// KeyStorage is how new token records are stored (KEY_STORAGE).
type KeyStorage uint8

const (
	// StoragePlain stores a record under the token itself, the old
	// services' format (SPEC §1).
	StoragePlain KeyStorage = iota
	// StorageHashed stores a record under HashedKey(token), never the
	// token.
	StorageHashed
)

// String is the KEY_STORAGE value: plain or hashed.
func (s KeyStorage) String() string {
	if s == StorageHashed {
		return "hashed"
	}
	return "plain"
}

// ParseKeyStorage reads a KEY_STORAGE value: plain or hashed.
func ParseKeyStorage(v string) (KeyStorage, bool) {
	switch v {
	case "plain":
		return StoragePlain, true
	case "hashed":
		return StorageHashed, true
	}
	return StoragePlain, false
}

// RecordKey is the Redis key a service of this storage writes token's
// record under.
func (s KeyStorage) RecordKey(token string) string {
	if s == StorageHashed {
		return HashedKey(token)
	}
	return token
}

// RecordKeys are the Redis keys token's record may be under, in the order a
// service of this storage looks: its own form first, then the other, so that
// every key is found whatever its storage, during and after a switch.
func (s KeyStorage) RecordKeys(token string) [2]string {
	h := HashedKey(token)
	if s == StorageHashed {
		return [2]string{h, token}
	}
	return [2]string{token, h}
}
