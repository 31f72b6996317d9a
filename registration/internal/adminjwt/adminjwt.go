// Package adminjwt checks the JWTs of the admin API (SPEC §4): audience
// pesto-admin, a sub naming the admin, a required exp, 30 s of leeway, the
// algorithm pinned to the configured key (HS256 with the secret, EdDSA
// with the Ed25519 public key).
package adminjwt

import (
	"crypto/ed25519"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims every admin JWT must carry (SPEC §4).
const (
	// Audience must be among a token's aud.
	Audience = "pesto-admin"
	// Leeway is the clock skew allowed on exp and nbf.
	Leeway = 30 * time.Second
)

// Verifier checks admin JWTs against the configured key(s). The
// algorithm is pinned to the key: HS256 with the secret, EdDSA with the
// public key; with both configured, each token is checked against the key
// of its own algorithm only.
type Verifier struct {
	parser *jwt.Parser
	secret []byte
	public ed25519.PublicKey
}

// NewVerifier returns the verifier of the configured keys, or nil when
// neither is configured.
func NewVerifier(secret []byte, public ed25519.PublicKey) *Verifier {
	var methods []string
	if len(secret) > 0 {
		methods = append(methods, jwt.SigningMethodHS256.Alg())
	}
	if len(public) > 0 {
		methods = append(methods, jwt.SigningMethodEdDSA.Alg())
	}
	if len(methods) == 0 {
		return nil
	}
	return &Verifier{
		parser: jwt.NewParser(
			jwt.WithValidMethods(methods),
			jwt.WithAudience(Audience),
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(Leeway),
		),
		secret: secret,
		public: public,
	}
}

// Verify returns the token's sub, or false for any token that is not a
// valid admin token.
func (v *Verifier) Verify(raw string) (string, bool) {
	var claims jwt.RegisteredClaims
	tok, err := v.parser.ParseWithClaims(raw, &claims, func(t *jwt.Token) (any, error) {
		switch t.Method {
		case jwt.SigningMethodHS256:
			return v.secret, nil
		case jwt.SigningMethodEdDSA:
			return v.public, nil
		}
		return nil, jwt.ErrTokenUnverifiable
	})
	if err != nil || !tok.Valid || strings.TrimSpace(claims.Subject) == "" {
		return "", false
	}
	return claims.Subject, true
}
