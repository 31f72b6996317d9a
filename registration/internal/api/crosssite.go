package api

import (
	"net/url"
	"slices"
	"strings"

	"github.com/gofiber/fiber/v3"

	"pesto/shared/clientip"
)

// errForbidden answers a cross-site POST.
var errForbidden = newAPIError(fiber.StatusForbidden, "Forbidden")

// refuseCrossSite answers 403 {"message":"Forbidden"} to a POST that a
// browser sent from another site: one whose Origin names a host other than
// the one the request was sent to, and not one of CORS_ORIGINS; without an
// Origin, one whose Sec-Fetch-Site is cross-site; with Origin "null" (a
// page that hides its origin), one whose Sec-Fetch-Site is not same-origin.
// Requests with neither
// header (curl, servers) are not a browser's and pass. It runs before
// anything is read or stored, the rate limits included.
//
// The request's own host is the Host header, or X-Forwarded-Host when a
// trusted proxy sent it (nginx, say, passes the upstream's name as Host).
// Schemes are not compared: behind a proxy that ends TLS the page is https
// and the request to registration http, and a browser never names another
// site's page with our host.
func refuseCrossSite(ips clientip.Resolver, allowed []string) fiber.Handler {
	anyOrigin := slices.Contains(allowed, "*")
	return func(c fiber.Ctx) error {
		origin := c.Get(fiber.HeaderOrigin)
		fetchSite := strings.ToLower(c.Get("Sec-Fetch-Site"))
		switch origin {
		case "":
			if fetchSite == "cross-site" {
				return errForbidden
			}
			return c.Next()
		case "null":
			// A page that hides its origin (a sandboxed frame, a
			// no-referrer policy, a privacy extension): only the browser's
			// own same-origin word lets it in.
			if fetchSite == "same-origin" {
				return c.Next()
			}
			return errForbidden
		}
		if anyOrigin || slices.Contains(allowed, strings.ToLower(origin)) {
			return c.Next()
		}
		u, err := url.Parse(origin)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return errForbidden
		}
		host := hostOf(u.Scheme, u.Host)
		if host == hostOf(u.Scheme, c.Get(fiber.HeaderHost)) {
			return c.Next()
		}
		if ips.IsTrusted(clientip.Peer(c)) {
			fwd, _, _ := strings.Cut(c.Get(fiber.HeaderXForwardedHost), ",")
			if fwd = strings.TrimSpace(fwd); fwd != "" && host == hostOf(u.Scheme, fwd) {
				return c.Next()
			}
		}
		return errForbidden
	}
}

// hostOf returns host[:port] lower-cased, without the scheme's default port
// (browsers leave it out of Origin; a Host header may carry it).
func hostOf(scheme, host string) string {
	host = strings.ToLower(host)
	if scheme == "http" {
		return strings.TrimSuffix(host, ":80")
	}
	return strings.TrimSuffix(host, ":443")
}
