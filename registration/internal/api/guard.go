package api

import (
	"strings"

	"github.com/gofiber/fiber/v3"

	"pesto/registration/internal/adminjwt"
)

// localAdmin is the fiber.Locals key of the verified JWT's sub.
type localAdminKey struct{}

var localAdmin localAdminKey

// requireAdmin guards the admin routes: 503 when no key is configured
// (before looking at any token), 401 for anything but a valid Bearer JWT.
// The JWT's sub is kept for the handlers' logs.
func requireAdmin(v *adminjwt.Verifier) fiber.Handler {
	return func(c fiber.Ctx) error {
		if v == nil {
			return errAdminOff
		}
		scheme, raw, ok := strings.Cut(c.Get(fiber.HeaderAuthorization), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return errUnauthorized
		}
		sub, ok := v.Verify(strings.TrimSpace(raw))
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
