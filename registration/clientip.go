package main

import (
	"net"
	"net/netip"
	"strings"

	"github.com/gofiber/fiber/v3"
)

// clientIPs finds the address a request came from, for the rate limits.
type clientIPs struct {
	trusted []netip.Prefix
}

func (p clientIPs) isTrusted(a netip.Addr) bool {
	for _, t := range p.trusted {
		if t.Contains(a) {
			return true
		}
	}
	return false
}

// clientIP returns the connection's peer, unless the peer is a trusted
// proxy: then X-Forwarded-For is walked from the right (the hop the nearest
// proxy appended), skipping trusted proxies, and the first address that is
// not one is the client. Values left of it are the client's own to forge and
// never believed. A hop that is not an IP address ends the walk at the last
// address a trusted proxy vouched for.
func (p clientIPs) clientIP(c fiber.Ctx) netip.Addr {
	peer := peerAddr(c)
	if !peer.IsValid() || !p.isTrusted(peer) {
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
			if !p.isTrusted(a) {
				return client
			}
		}
	}
	return client
}

func peerAddr(c fiber.Ctx) netip.Addr {
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
