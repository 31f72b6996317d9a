package main

import (
	"crypto/ed25519"
	"strings"
	"time"

	"github.com/gofiber/fiber/v3"
	"github.com/golang-jwt/jwt/v5"
)

// Claims every admin JWT must carry (SPEC §4).
const (
	adminAudience = "pesto-admin"
	adminLeeway   = 30 * time.Second
)

// localAdmin is the fiber.Locals key of the verified JWT's sub.
type localAdminKey struct{}

var localAdmin localAdminKey

// adminVerifier checks admin JWTs against the configured key(s). The
// algorithm is pinned to the key: HS256 with the secret, EdDSA with the
// public key; with both configured, each token is checked against the key
// of its own algorithm only.
type adminVerifier struct {
	parser *jwt.Parser
	secret []byte
	public ed25519.PublicKey
}

// newAdminVerifier returns nil when neither key is configured.
func newAdminVerifier(secret []byte, public ed25519.PublicKey) *adminVerifier {
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
	return &adminVerifier{
		parser: jwt.NewParser(
			jwt.WithValidMethods(methods),
			jwt.WithAudience(adminAudience),
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(adminLeeway),
		),
		secret: secret,
		public: public,
	}
}

// verify returns the token's sub, or false for any token that is not a
// valid admin token.
func (v *adminVerifier) verify(raw string) (string, bool) {
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

// requireAdmin guards the admin routes: 503 when no key is configured
// (before looking at any token), 401 for anything but a valid Bearer JWT.
// The JWT's sub is kept for the handlers' logs.
func requireAdmin(v *adminVerifier) fiber.Handler {
	return func(c fiber.Ctx) error {
		if v == nil {
			return errAdminOff
		}
		scheme, raw, ok := strings.Cut(c.Get(fiber.HeaderAuthorization), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return errUnauthorized
		}
		sub, ok := v.verify(strings.TrimSpace(raw))
		if !ok {
			return errUnauthorized
		}
		c.Locals(localAdmin, strings.Clone(sub))
		return c.Next()
	}
}

// adminSub returns the sub of the request's verified admin JWT.
func adminSub(c fiber.Ctx) string {
	s, _ := c.Locals(localAdmin).(string)
	return s
}
