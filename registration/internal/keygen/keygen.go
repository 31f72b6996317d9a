// Package keygen makes the keys registration hands out (SPEC §1): 64
// characters of [A-Za-z0-9] for an approval or a rotation, and the random
// parts of trial keys (package trial), from crypto/rand only.
package keygen

import (
	"crypto/rand"
	"errors"
)

// ApprovedChars is the length of a key made for an approval or a rotation.
const ApprovedChars = 64

// Approved returns a new key for an approval or a rotation.
func Approved() string { return Random(ApprovedChars) }

const alphanumeric = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// Random returns n characters of [A-Za-z0-9] from crypto/rand,
// each equally likely: bytes of 248 and above (248 = 4×62) are discarded
// rather than folded onto the first characters.
func Random(n int) string {
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

// ErrCollision: a freshly generated key already exists (after the few
// draws its caller allows; a fault).
var ErrCollision = errors.New("generated key already exists")
