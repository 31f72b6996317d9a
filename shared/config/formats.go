package config

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The formats of variables both services read: rates, the IPv6 prefixes a
// client is counted at, and trusted proxies.

// Rate is a limit of Count requests per Per.
type Rate struct {
	Count int64
	Per   time.Duration
}

func (r Rate) String() string {
	unit := map[time.Duration]string{time.Second: "s", time.Minute: "m", time.Hour: "h"}[r.Per]
	return strconv.FormatInt(r.Count, 10) + "/" + unit
}

// Rate reads the variable name as <count>/<s|m|h>, count 1 to a
// million (def when unset).
func (e *Env) Rate(name, def string) Rate {
	v := e.String(name, def)
	n, unit, ok := strings.Cut(v, "/")
	count, err := strconv.ParseInt(n, 10, 64)
	per := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour}[unit]
	if !ok || err != nil || count < 1 || count > 1_000_000 || per == 0 {
		e.Fail(name, "want <count>/<s|m|h> such as 10/m, got %q", v)
		return Rate{Count: 1, Per: time.Second}
	}
	return Rate{Count: count, Per: per}
}

// RatePrefix is an IPv6 prefix length a client is counted at, with its
// multiple of the route's rate.
type RatePrefix struct {
	Bits, Times int
}

// DefaultIPv6RatePrefixes: an IPv6 client counts against its /64 at the
// route's rate, its /56 at twice and its /48 at four times that rate.
const DefaultIPv6RatePrefixes = "64:1,56:2,48:4"

// IPv6RatePrefixes reads IPV6_RATE_PREFIXES: comma-separated <prefix
// length>:<multiple>, such as 64:1,56:2,48:4: lengths 16–128, each once;
// multiples 1–1000.
func (e *Env) IPv6RatePrefixes() []RatePrefix {
	v := e.String("IPV6_RATE_PREFIXES", DefaultIPv6RatePrefixes)
	var out []RatePrefix
	for _, f := range strings.Split(v, ",") {
		b, m, ok := strings.Cut(strings.TrimSpace(f), ":")
		bits, berr := strconv.Atoi(b)
		times, merr := strconv.Atoi(m)
		if !ok || berr != nil || merr != nil || bits < 16 || bits > 128 || times < 1 || times > 1000 ||
			slices.ContainsFunc(out, func(p RatePrefix) bool { return p.Bits == bits }) {
			e.Fail("IPV6_RATE_PREFIXES", "want comma-separated <prefix length>:<multiple of the rate> such as 64:1,56:2,48:4, got %q", v)
			return nil
		}
		out = append(out, RatePrefix{Bits: bits, Times: times})
	}
	return out
}

// TrustedProxies reads TRUSTED_PROXIES: comma-separated IP addresses and
// CIDR prefixes; empty trusts none.
func (e *Env) TrustedProxies() []netip.Prefix {
	v, _ := e.Lookup("TRUSTED_PROXIES")
	var out []netip.Prefix
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil || a.Zone() != "" {
				e.Fail("TRUSTED_PROXIES", "want comma-separated IP addresses or CIDR prefixes, got %q", f)
				return nil
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		out = append(out, p.Masked())
	}
	return out
}
