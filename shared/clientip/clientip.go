// Package clientip finds the address a request came from, behind trusted
// proxies or not, for the per-client rate limits of both services.
package clientip

import (
	"net"
	"net/netip"
	"strings"

	"github.com/gofiber/fiber/v3"
)

// Resolver finds the address a request came from, for the rate limits.
type Resolver struct {
	// Trusted are the proxies whose X-Forwarded-For is believed.
	Trusted []netip.Prefix
}

// IsTrusted reports whether a is one of the trusted proxies.
func (p Resolver) IsTrusted(a netip.Addr) bool {
	for _, t := range p.Trusted {
		if t.Contains(a) {
			return true
		}
	}
	return false
}

// ClientIP returns the connection's peer, unless the peer is a trusted
// proxy: then X-Forwarded-For is walked from the right (the hop the nearest
// proxy appended), skipping trusted proxies, and the first address that is
// not one is the client. Values left of it are the client's own to forge and
// never believed. A hop that is not an IP address ends the walk at the last
// address a trusted proxy vouched for.
func (p Resolver) ClientIP(c fiber.Ctx) netip.Addr {
	peer := Peer(c)
	if !peer.IsValid() || !p.IsTrusted(peer) {
		return peer
	}
	client := peer
	headers := c.Request().Header.PeekAll(fiber.HeaderXForwardedFor)
	for h := len(headers) - 1; h >= 0; h-- {
		hops := string(headers[h])
		for hops != "" {
			var hop string
			if i := strings.LastIndexByte(hops, ','); i >= 0 {
				hop, hops = hops[i+1:], hops[:i]
			} else {
				hop, hops = hops, ""
			}
			a, ok := parseHop(hop)
			if !ok {
				return client
			}
			client = a
			if !p.IsTrusted(a) {
				return client
			}
		}
	}
	return client
}

// Peer returns the address of the connection's other end.
func Peer(c fiber.Ctx) netip.Addr {
	if ta, ok := c.RequestCtx().RemoteAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(ta.IP); ok {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}

// parseHop reads one X-Forwarded-For element: an address, possibly with a
// port ("1.2.3.4:5", "[::1]:5") as some proxies write it.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}
