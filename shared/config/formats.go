package config

import (
	"fmt"
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
	return strconv.FormatInt(r.Count, 10) + "/" + r.unit()
}

func (r Rate) unit() string {
	return map[time.Duration]string{time.Second: "s", time.Minute: "m", time.Hour: "h"}[r.Per]
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

// RateBelow fails clientVar unless its rate, at the widest multiple an
// IPv6 client gets (prefixes), is below globalVar's, both at once (the
// burst) and over time: so no one client, whatever its prefixes, can use up
// what every client shares, and lock everyone else out alone.
func (e *Env) RateBelow(clientVar string, client Rate, prefixes []RatePrefix, globalVar string, global Rate) {
	times := int64(1)
	for _, p := range prefixes {
		times = max(times, int64(p.Times))
	}
	burst := client.Count * times
	// Per in whole seconds: 10^6 × 1000 × 3600 fits an int64.
	perClient, perGlobal := int64(client.Per/time.Second), int64(global.Per/time.Second)
	if burst < global.Count && burst*perGlobal < global.Count*perClient {
		return
	}
	widest := ""
	if times > 1 {
		widest = fmt.Sprintf(" (%d/%s for an IPv6 client at %d times the rate)", burst, Rate{Per: client.Per}.unit(), times)
	}
	e.Fail(clientVar, "%s%s is not below %s %s, at once and over time: one client could use up every client's allowance",
		client, widest, globalVar, global)
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
