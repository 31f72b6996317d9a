// Package proof is the proof of work that lets a request pass a global
// cap that plain requests have used up: a browser spends about a second
// on a challenge the server signed, and the server checks the answer in
// one hash. Nothing is stored to issue a challenge: it carries its route,
// its difficulty and its expiry, signed with a key derived from the
// server's secret (config.Config.ServerSecret); the caller makes each
// answer count once (its ID, until it expires).
//
// A challenge is four fields joined by dots:
//
//	<bits>.<expiry, Unix seconds>.<16 random bytes, base64url>.<MAC, base64url>
//
// (the MAC: the first 16 bytes of HMAC-SHA256 over the route and the first
// three fields). An answer, the proof, is the challenge, a dot and a
// counter in decimal such that the SHA-256 of the whole proof begins with
// at least bits zero bits.
package proof

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

// Defaults of the proof of work.
const (
	// Bits is the work asked: a browser's SHA-256 in JavaScript tries
	// about 2^Bits counters on average, about a second (measured: README).
	Bits = 18
	// Life is how long a challenge may be answered.
	Life = 5 * time.Minute
	// macLen is the bytes of the MAC kept in a challenge.
	macLen = 16
)

// ErrInvalid: a proof that is malformed, signed for another route or by
// another key, expired, or not enough work.
var ErrInvalid = errors.New("not a valid proof of work")

// Issuer issues and checks the challenges of one server secret.
type Issuer struct {
	key  []byte
	bits int
	life time.Duration
	now  func() time.Time
}

// New returns the Issuer of secret, asking bits of work, with now as its
// clock.
func New(secret []byte, bits int, now func() time.Time) *Issuer {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("pesto proof of work"))
	return &Issuer{key: mac.Sum(nil), bits: bits, life: Life, now: now}
}

// Challenge returns a new challenge for route.
func (i *Issuer) Challenge(route string) string {
	var nonce [16]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	head := strconv.Itoa(i.bits) + "." + strconv.FormatInt(i.now().Add(i.life).Unix(), 10) + "." +
		base64.RawURLEncoding.EncodeToString(nonce[:])
	return head + "." + base64.RawURLEncoding.EncodeToString(i.mac(route, head))
}

func (i *Issuer) mac(route, head string) []byte {
	m := hmac.New(sha256.New, i.key)
	m.Write([]byte(route + "\x00" + head))
	return m.Sum(nil)[:macLen]
}

// Verify checks a proof for route: the challenge it answers is this
// Issuer's, for route, unexpired, of at least the Issuer's bits, and the
// work is done. It returns the challenge's ID (its random field), to be
// used once, and when it expires.
func (i *Issuer) Verify(route, proof string) (id string, expires time.Time, err error) {
	if len(proof) > 200 {
		return "", time.Time{}, ErrInvalid
	}
	f := strings.Split(proof, ".")
	if len(f) != 5 {
		return "", time.Time{}, ErrInvalid
	}
	b, err1 := strconv.Atoi(f[0])
	exp, err2 := strconv.ParseInt(f[1], 10, 64)
	mac, err3 := base64.RawURLEncoding.DecodeString(f[3])
	_, err4 := strconv.ParseUint(f[4], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || b < i.bits || b > 64 {
		return "", time.Time{}, ErrInvalid
	}
	head := f[0] + "." + f[1] + "." + f[2]
	if !hmac.Equal(mac, i.mac(route, head)) {
		return "", time.Time{}, ErrInvalid
	}
	expires = time.Unix(exp, 0)
	if !i.now().Before(expires) {
		return "", time.Time{}, ErrInvalid
	}
	if LeadingZeros(sha256.Sum256([]byte(proof))) < b {
		return "", time.Time{}, ErrInvalid
	}
	return f[2], expires, nil
}

// LeadingZeros is the number of zero bits the hash begins with.
func LeadingZeros(h [sha256.Size]byte) int {
	n := 0
	for _, c := range h {
		if c != 0 {
			return n + bits.LeadingZeros8(c)
		}
		n += 8
	}
	return n
}

// Solve finds a proof of challenge, as a browser does: the counter from 0
// up. For tests and clients written in Go.
func Solve(challenge string) string {
	f := strings.SplitN(challenge, ".", 2)
	b, _ := strconv.Atoi(f[0])
	for n := uint64(0); ; n++ {
		p := challenge + "." + strconv.FormatUint(n, 10)
		if LeadingZeros(sha256.Sum256([]byte(p))) >= b {
			return p
		}
	}
}
