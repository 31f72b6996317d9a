package main

import (
	"crypto/rand"
	"errors"
)

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
