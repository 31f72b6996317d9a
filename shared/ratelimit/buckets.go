package ratelimit

import (
	"net/netip"
	"strconv"

	"pesto/shared/config"
	"pesto/shared/wire"
)

// KeyPrefix starts every rate-limit key: pesto:ratelimit:{<route>}:<bucket>,
// where a bucket is an IPv4 address, an IPv6 prefix (2001:db8:1:2::/64) or
// "all" (the route's global cap). The hash tag puts a route's buckets in one
// cluster slot, so that one script checks and counts all of a request's
// buckets at once.
const KeyPrefix = wire.OwnPrefix + "ratelimit:"

// Limits are the buckets of one route: each client at a rate (an IPv4
// address; an IPv6 client at each of its prefixes, each at its multiple of
// the rate, since one host often owns a /64 and one customer a /56 or /48),
// and every client together at a global rate.
type Limits struct {
	prefix   string   // KeyPrefix{<route>}:
	perIPv4  []string // burst, period of an IPv4 address
	prefixes []config.RatePrefix
	perIPv6  []string // burst, period of each of prefixes, in turn
	global   []string // burst, period of the global bucket
}

// NewLimits returns the limits of route: each client at rate (an IPv6 one
// at each of prefixes), all of them together at global.
func NewLimits(route string, rate config.Rate, prefixes []config.RatePrefix, global config.Rate) Limits {
	args := func(r config.Rate, times int) []string {
		return []string{strconv.FormatInt(r.Count*int64(times), 10), strconv.FormatInt(r.Per.Microseconds(), 10)}
	}
	l := Limits{
		prefix:   KeyPrefix + "{" + route + "}:",
		perIPv4:  args(rate, 1),
		prefixes: prefixes,
		global:   args(global, 1),
	}
	for _, p := range prefixes {
		l.perIPv6 = append(l.perIPv6, args(rate, p.Times)...)
	}
	return l
}

// Buckets returns the keys and the script's arguments (Allow) of a request
// from a: its client's buckets, then the global one.
func (l Limits) Buckets(a netip.Addr) (keys, args []string) {
	switch {
	case a.Is6():
		for _, p := range l.prefixes {
			keys = append(keys, l.prefix+netip.PrefixFrom(a, p.Bits).Masked().String())
		}
		args = append(args, l.perIPv6...)
	case a.IsValid():
		keys, args = []string{l.prefix + a.String()}, append(args, l.perIPv4...)
	default:
		keys, args = []string{l.prefix + "unknown"}, append(args, l.perIPv4...)
	}
	return append(keys, l.prefix+"all"), append(args, l.global...)
}
