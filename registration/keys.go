package main

import (
	"crypto/rand"
	"errors"

	"pesto/shared/wire"
)

// maxTokenLen bounds an admin-supplied token, as auth does.
const maxTokenLen = 256

// Shapes of generated keys (SPEC §1).
const (
	trialPrefix      = "TRIAL-"
	trialTokenChars  = 58
	trialEmailChars  = 20
	approvedKeyChars = 64
)

const alphanumeric = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randomAlphanumeric returns n characters of [A-Za-z0-9] from crypto/rand,
// each equally likely: bytes of 248 and above (248 = 4×62) are discarded
// rather than folded onto the first characters.
func randomAlphanumeric(n int) string {
	out := make([]byte, 0, n)
	buf := make([]byte, n+n/4+8)
	for len(out) < n {
		_, _ = rand.Read(buf) // crypto/rand.Read never fails (Go ≥ 1.24)
		for _, b := range buf {
			if b < 248 && len(out) < n {
				out = append(out, alphanumeric[b%62])
			}
		}
	}
	return string(out)
}

// errCollision: a freshly generated key already exists.
var errCollision = errors.New("generated key already exists")

// wellFormedToken reports whether token may name an API key: 1–256 bytes of
// 0x21–0x7E, not one of the data model's own keys (as auth checks).
func wellFormedToken(token string) bool {
	if token == "" || len(token) > maxTokenLen {
		return false
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c < 0x21 || c > 0x7e {
			return false
		}
	}
	return !wire.IsOwnKey(token)
}
