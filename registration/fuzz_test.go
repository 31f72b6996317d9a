package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"pesto/shared/config"
	"pesto/shared/servicetest"
)

// Fuzz targets of what an operator or an attacker hands the service: the
// SMTP_URL, and the admin JWT. (The register body's parsers are fuzzed in
// signup_test.go.) The seeds run in every `go test`; `go test -fuzz` explores.

// smtpURLTexts is every fixed text of parseSMTPURL's errors: a "password"
// that is part of them is not a leak.
const smtpURLTexts = "not a URL; want smtp://user:password@host:587 or smtps://user:password@host:465 " +
	"want smtp:// (STARTTLS) or smtps:// (implicit TLS) no host; want smtp://user:password@host:587 " +
	"a path is not allowed a fragment is not allowed port: want a number from 1 to 65535 empty port " +
	"bad query string unknown parameter: only tls= is known tls is given more than once " +
	"smtps:// is always TLS: tls= is only for smtp:// tls=: want opportunistic or none " +
	"a password without a user name scheme \"smtp\" \"smtps\" SMTP_URL: "

// FuzzSMTPURL: SMTP_URL parsing never panics; what it accepts is a usable
// server; what it refuses is an error naming SMTP_URL that never shows the
// password, however the password is written (PASSWORD in raw is replaced by
// it, unescaped, as an operator might paste it).
func FuzzSMTPURL(f *testing.F) {
	for _, s := range [][2]string{
		{"smtp://user:PASSWORD@mail.example.com:587", "s3cret"},
		{"smtps://user:PASSWORD@mail.example.com", "p@ss:w/rd"},
		{"smtp://user:PASSWORD@mail.example.com?tls=none", "hunter2"},
		{"smtp://user:PASSWORD@mail.example.com", "ab#cdef"},
		{"smtp://user:PASSWORD@mail.example.com", "12?tls=maybe"},
		{"smtp://user:PASSWORD@mail.example.com", "99/inbox"},
		{"smtp://user:PASSWORD@mail.example.com", "70000#x"},
		{"smtp://user:PASSWORD@mail.example.com", "25?auth=plain"},
		{"smtp://user:PASSWORD@mail.example.com", "25?tls=pw123"},
		{"smtp://user:PASSWORD@mail.example.com", "pa ss%zz"},
		{"http://user:PASSWORD@mail.example.com", "s3cret"},
		{"smtp://:PASSWORD@mail.example.com", "s3cret"},
		{"smtp://[::1]:PASSWORD", "25"},
		{"PASSWORD", "smtp://x"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, raw, password string) {
		v := strings.Replace(raw, "PASSWORD", password, 1)
		s, err := parseSMTPURL(v)
		e := config.New(servicetest.Env(map[string]string{"SMTP_URL": v}))
		cfg := loadMailConfig(e)
		if err == nil {
			if s.Host == "" || s.Port < 1 || s.Port > 65535 || s.TLS < tlsStartTLS || s.TLS > tlsNone ||
				(s.Password != "" && s.Username == "") {
				t.Fatalf("accepted %q as %+v", v, *s)
			}
			if strings.TrimSpace(v) == v && (e.Err() != nil || cfg.SMTP == nil || *cfg.SMTP != *s) {
				t.Fatalf("SMTP_URL=%q: config %+v, %v; want %+v", v, cfg.SMTP, e.Err(), *s)
			}
			return
		}
		var ce *config.Error
		// (The configuration trims the variable first, as it does every one.)
		if v != "" && strings.TrimSpace(v) == v && (!errors.As(e.Err(), &ce) || ce.Var != "SMTP_URL") {
			t.Fatalf("SMTP_URL=%q refused by parseSMTPURL (%v), but the config error is %v", v, err, e.Err())
		}
		// Neither the password nor a piece of it between URL delimiters
		// (an unescaped '#', '?' or '/' in it cuts it there) may show.
		rest := strings.Replace(raw, "PASSWORD", "", 1)
		pieces := strings.FieldsFunc(password, func(r rune) bool { return strings.ContainsRune("#?/@:&=;%+ ", r) })
		for _, p := range append(pieces, password) {
			if len(p) < 3 || strings.Contains(rest, p) || strings.Contains(smtpURLTexts, p) {
				continue // too short, or also written elsewhere: not told apart
			}
			for _, msg := range []string{err.Error(), errorText(e.Err())} {
				if strings.Contains(msg, p) {
					t.Fatalf("SMTP_URL=%q: the error %q shows %q of the password %q", v, msg, p, password)
				}
			}
		}
	})
}

func errorText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

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
	return fuzzJWTKeys{secret: []byte(testAdminSecret), pub: priv.Public().(ed25519.PublicKey), priv: priv}
}

// FuzzAdminJWT: the admin token check never panics, and lets through only a
// token whose signature verifies with the configured key of its own
// algorithm (HS256 with the secret, EdDSA with the public key), with an exp
// not past (30 s leeway), no nbf in the future, an aud naming pesto-admin
// and a sub. The seeds are valid tokens (which must pass) and near misses;
// the fuzzer mutates them.
func FuzzAdminJWT(f *testing.F) {
	k := newFuzzJWTKeys()
	v := newAdminVerifier(k.secret, k.pub)
	now := time.Now()
	claims := func(edit func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"aud": []string{adminAudience}, "sub": "alice", "iat": now.Unix(), "exp": now.Add(24 * time.Hour).Unix()}
		if edit != nil {
			edit(c)
		}
		return c
	}
	valid := []string{
		sign(f, jwt.SigningMethodHS256, k.secret, claims(nil)),
		sign(f, jwt.SigningMethodEdDSA, k.priv, claims(nil)),
		sign(f, jwt.SigningMethodHS256, k.secret, claims(func(c jwt.MapClaims) { c["aud"] = adminAudience })),
	}
	for _, tok := range valid {
		if _, ok := v.verify(tok); !ok {
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
		sub, ok := v.verify(raw)
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
	if !ok || !exp.After(now.Add(-adminLeeway)) {
		return "no exp, or past"
	}
	if _, present := c["nbf"]; present {
		if nbf, ok := date("nbf"); !ok || nbf.After(now.Add(adminLeeway)) {
			return "nbf in the future or not a date"
		}
	}
	audOK := false
	switch a := c["aud"].(type) {
	case string:
		audOK = a == adminAudience
	case []any:
		for _, x := range a {
			audOK = audOK || x == adminAudience
		}
	}
	if !audOK {
		return "aud does not name " + adminAudience
	}
	if s, _ := c["sub"].(string); strings.TrimSpace(s) == "" {
		return "no sub"
	}
	return ""
}
