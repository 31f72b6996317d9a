package adminjwt

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The fuzz target of what an attacker hands the admin API: its JWT. The
// seeds run in every `go test`; `go test -fuzz` explores.

// fuzzJWTKeys are the keys of FuzzAdminJWT: both configured, so that the
// algorithm pinning is fuzzed too.
type fuzzJWTKeys struct {
	secret []byte
	pub    ed25519.PublicKey
	priv   ed25519.PrivateKey
}

func newFuzzJWTKeys() fuzzJWTKeys {
	// A fixed seed: the corpus of a fuzz run stays meaningful in the next.
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	return fuzzJWTKeys{secret: []byte("test-secret-0123456789-abcdefghij-klmnop"), pub: priv.Public().(ed25519.PublicKey), priv: priv}
}

// FuzzAdminJWT: the admin token check never panics, and lets through only a
// token whose signature verifies with the configured key of its own
// algorithm (HS256 with the secret, EdDSA with the public key), with an exp
// not past (30 s leeway), no nbf in the future, an aud naming pesto-admin
// and a sub. The seeds are valid tokens (which must pass) and near misses;
// the fuzzer mutates them.
func FuzzAdminJWT(f *testing.F) {
	k := newFuzzJWTKeys()
	v := NewVerifier(k.secret, k.pub)
	now := time.Now()
	claims := func(edit func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"aud": []string{Audience}, "sub": "alice", "iat": now.Unix(), "exp": now.Add(24 * time.Hour).Unix()}
		if edit != nil {
			edit(c)
		}
		return c
	}
	valid := []string{
		sign(f, jwt.SigningMethodHS256, k.secret, claims(nil)),
		sign(f, jwt.SigningMethodEdDSA, k.priv, claims(nil)),
		sign(f, jwt.SigningMethodHS256, k.secret, claims(func(c jwt.MapClaims) { c["aud"] = Audience })),
	}
	for _, tok := range valid {
		if _, ok := v.Verify(tok); !ok {
			f.Fatalf("valid seed %s refused", tok)
		}
		f.Add(tok)
	}
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	for _, tok := range []string{
		sign(f, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil)),
		sign(f, jwt.SigningMethodHS256, []byte(k.pub), claims(nil)), // the public key as an HMAC secret
		sign(f, jwt.SigningMethodHS384, k.secret, claims(nil)),
		sign(f, jwt.SigningMethodEdDSA, otherPriv, claims(nil)),
		sign(f, jwt.SigningMethodHS256, k.secret, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Hour).Unix() })),
		sign(f, jwt.SigningMethodHS256, k.secret, claims(func(c jwt.MapClaims) { delete(c, "exp") })),
		sign(f, jwt.SigningMethodHS256, k.secret, claims(func(c jwt.MapClaims) { c["aud"] = "pesto" })),
		sign(f, jwt.SigningMethodHS256, k.secret, claims(func(c jwt.MapClaims) { c["sub"] = " " })),
		sign(f, jwt.SigningMethodHS256, k.secret, claims(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() })),
		sign(f, jwt.SigningMethodHS256, k.secret, claims(func(c jwt.MapClaims) { c["exp"] = "tomorrow" })),
		"", ".", "..", "a.b.c", "Bearer x", strings.Repeat("A", 5000),
	} {
		f.Add(tok)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		sub, ok := v.Verify(raw)
		if !ok {
			return
		}
		if why := adminTokenFlaw(k, raw, time.Now()); why != "" {
			t.Fatalf("token %q passed with sub %q: %s", raw, sub, why)
		}
	})
}

// adminTokenFlaw checks a token the verifier let through, independently of
// golang-jwt: it returns why the token should not have passed, or "".
func adminTokenFlaw(k fuzzJWTKeys, raw string, now time.Time) string {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "not three parts"
	}
	seg := func(s string) []byte {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			return nil
		}
		return b
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(seg(parts[0]), &header); err != nil {
		return "header does not decode"
	}
	signed, sig := []byte(parts[0]+"."+parts[1]), seg(parts[2])
	switch header.Alg {
	case "HS256":
		m := hmac.New(sha256.New, k.secret)
		m.Write(signed)
		if !hmac.Equal(m.Sum(nil), sig) {
			return "HS256 signature does not verify with the secret"
		}
	case "EdDSA":
		if len(sig) != ed25519.SignatureSize || !ed25519.Verify(k.pub, signed, sig) {
			return "EdDSA signature does not verify with the public key"
		}
	default:
		return "algorithm " + header.Alg
	}
	var c map[string]any
	dec := json.NewDecoder(bytes.NewReader(seg(parts[1])))
	dec.UseNumber()
	if err := dec.Decode(&c); err != nil {
		return "claims do not decode"
	}
	date := func(name string) (time.Time, bool) {
		n, ok := c[name].(json.Number)
		if !ok {
			return time.Time{}, false
		}
		f, err := n.Float64()
		if err != nil {
			return time.Time{}, false
		}
		return time.Unix(0, 0).Add(time.Duration(f * float64(time.Second))), true
	}
	exp, ok := date("exp")
	if !ok || !exp.After(now.Add(-Leeway)) {
		return "no exp, or past"
	}
	if _, present := c["nbf"]; present {
		if nbf, ok := date("nbf"); !ok || nbf.After(now.Add(Leeway)) {
			return "nbf in the future or not a date"
		}
	}
	audOK := false
	switch a := c["aud"].(type) {
	case string:
		audOK = a == Audience
	case []any:
		for _, x := range a {
			audOK = audOK || x == Audience
		}
	}
	if !audOK {
		return "aud does not name " + Audience
	}
	if s, _ := c["sub"].(string); strings.TrimSpace(s) == "" {
		return "no sub"
	}
	return ""
}

// sign returns a JWT of claims signed with method and key.
func sign(t testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
