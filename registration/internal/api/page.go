package api

import (
	"github.com/gofiber/fiber/v3"

	"pesto/registration/web"
)

// handlePage answers GET / with the signup page.
func handlePage(c fiber.Ctx) error { return sendPage(c, web.Signup()) }

// sendPage sends an HTML page of the web package, with its headers.
func sendPage(c fiber.Ctx, page []byte) error {
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	c.Set(fiber.HeaderContentSecurityPolicy, web.CSP)
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	return c.Send(page)
}

// localResultPage marks a request answered with the result page.
type localResultPageKey struct{}

var localResultPage localResultPageKey

func wantsResultPage(c fiber.Ctx) bool {
	v, _ := c.Locals(localResultPage).(bool)
	return v
}
