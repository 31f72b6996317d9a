package main

import (
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"pesto/shared/config"
	"pesto/shared/wire"
)

// Defaults of SPEC §5 that only auth has.
const (
	defaultCacheTTL  = 60 * time.Second
	defaultUnmetered = "trial*@pesto.teknologiumum.com"
	defaultUsageRate = "60/m"
	// defaultUsageGlobalRate caps GET /api/usage over every client: 100 a
	// second, and 6,000 at once.
	defaultUsageGlobalRate = "6000/m"
	defaultKeyRate         = "10/s"
)

type authConfig struct {
	config.Common
	// CacheTTL is how long a token record may be served from the
	// client-side cache; 0 turns the cache off.
	CacheTTL time.Duration
	// Unmetered is a lower-case path.Match pattern of emails allowed
	// without counting; "" meters everyone.
	Unmetered string
	// UsageRate bounds GET /api/usage per client (an IPv4 address; an IPv6
	// client at each of IPv6RatePrefixes), UsageGlobalRate over every
	// client together.
	UsageRate, UsageGlobalRate config.Rate
	// IPv6RatePrefixes are the prefixes an IPv6 client is counted at, each
	// with its multiple of UsageRate.
	IPv6RatePrefixes []config.RatePrefix
	// KeyRate is the rate of a key whose record has none of its own; the
	// zero Rate (KEY_RATE=off): none.
	KeyRate wire.Rate
	// TrustedProxies are the proxies whose X-Forwarded-For names the
	// client of /api/usage.
	TrustedProxies []netip.Prefix
	// QuotaWarnings are the percentages of a monthly limit whose crossing
	// is emailed (ascending); none: no warnings.
	QuotaWarnings []int
	// GOGCSet and GOMAXPROCSSet: the environment sets GOGC (even to "") or
	// GOMAXPROCS (to anything but ""), which the Go runtime has applied;
	// otherwise run sets auth's own (gcPercent, defaultProcs).
	GOGCSet, GOMAXPROCSSet bool
	// Connection timeouts; zero means the server package's defaults. Not
	// configurable from the environment: tests shorten them.
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
}

func loadConfig(lookupEnv func(string) (string, bool)) (authConfig, error) {
	e := config.New(lookupEnv)
	c := authConfig{
		Common:           config.LoadCommon(e),
		CacheTTL:         e.Duration("TOKEN_CACHE_TTL", defaultCacheTTL),
		Unmetered:        defaultUnmetered,
		KeyRate:          parseKeyRate(e),
		UsageRate:        e.Rate("USAGE_RATE", defaultUsageRate),
		UsageGlobalRate:  e.Rate("USAGE_GLOBAL_RATE", defaultUsageGlobalRate),
		IPv6RatePrefixes: e.IPv6RatePrefixes(),
		TrustedProxies:   e.TrustedProxies(),
		QuotaWarnings:    parseQuotaWarnings(e),
		GOGCSet:          e.IsSet("GOGC"),
		GOMAXPROCSSet:    e.NotEmpty("GOMAXPROCS"),
	}
	e.RateBelow("USAGE_RATE", c.UsageRate, c.IPv6RatePrefixes, "USAGE_GLOBAL_RATE", c.UsageGlobalRate)
	if e.IsSet("UNMETERED_EMAILS") {
		c.Unmetered, _ = e.Lookup("UNMETERED_EMAILS")
		c.Unmetered = strings.ToLower(c.Unmetered)
		if _, err := path.Match(c.Unmetered, ""); err != nil {
			e.Fail("UNMETERED_EMAILS", "bad pattern %q: %v", c.Unmetered, err)
		}
	}
	return c, e.Err()
}

// The Redis client's budgets. rueidis's defaults (4 connections per node,
// each with 128 MiB of cache, 1 MiB of buffers and a ring of 1024) would
// dwarf the service. One auto-pipelined connection per node carries all of
// auth's traffic (Redis runs commands one at a time anyway), and a short
// flush delay lets each write and read carry more commands: fewer system
// calls in auth and in Redis (make bench: about 10% less CPU per request).
const (
	// cacheBytesEachConn bounds the token cache (tokenCache), per node:
	// about 430 B for a 64-character key and a 200-byte record, so about
	// 14,000 such keys, and the 10,000 keys of the common case fit.
	cacheBytesEachConn = 6 << 20
	bufferEachConn     = 32 << 10
	ringScale          = 8 // 2^8 commands in flight per connection
	flushDelay         = 20 * time.Microsecond
	// connTimeout: a Redis that stops answering (hung, not closed) is
	// given up within about this long, its connection closed and the token
	// cache emptied with it, so that no key, not even an unmetered one, is
	// let through from the cache of a Redis that may have changed since.
	connTimeout = time.Second
	// counterConnTimeout: a stall of Redis this long still closes the
	// counting connection (what it counted for calls answered 500 meanwhile
	// is then kept); counterUserTimeout: a Redis host gone is given up
	// within about this long.
	counterConnTimeout = time.Hour
	counterUserTimeout = 5 * time.Second
)

func (c authConfig) redisOptions() rueidis.ClientOption {
	opt := c.Redis
	opt.ClientName = "pesto-auth"
	opt.DisableCache = c.CacheTTL == 0
	opt.CacheSizeEachConn = cacheBytesEachConn
	opt.NewCacheStoreFn = func(o rueidis.CacheStoreOption) rueidis.CacheStore { return newTokenCache(o.CacheSizeEachConn) }
	opt.ReadBufferEachConn = bufferEachConn
	opt.WriteBufferEachConn = bufferEachConn
	opt.PipelineMultiplex = -1 // 2^0: one connection per node
	opt.RingScaleEachConn = ringScale
	opt.MaxFlushDelay = flushDelay
	opt.ConnWriteTimeout = connTimeout
	return opt
}

// counterOptions are those of the counting client: no cache, and a
// connection that is not given up while Redis is alive but slow. A count
// sent to a Redis that then stalls is executed when it resumes; its reply
// must come back on the same connection so that what it counted for calls
// answered 500 meanwhile is refunded (a closed connection would leave it
// counted). A peer that is gone is still noticed: the kernel gives the
// connection up when what was sent stays unacknowledged for
// counterUserTimeout (TCP_USER_TIMEOUT; a stalled Redis's kernel still
// acknowledges), and keepalives find it gone when idle.
func (c authConfig) counterOptions() rueidis.ClientOption {
	opt := c.redisOptions()
	opt.ClientName = "pesto-auth-counter"
	opt.DisableCache = true
	opt.ConnWriteTimeout = counterConnTimeout
	opt.Dialer.Control = setUserTimeout(counterUserTimeout)
	return opt
}

// parseKeyRate reads KEY_RATE: a rate as a record's Rate field holds it
// (wire.ParseRate); off: none.
func parseKeyRate(e *config.Env) wire.Rate {
	v := e.String("KEY_RATE", defaultKeyRate)
	r, err := wire.ParseRate(v)
	if err != nil {
		e.Fail("KEY_RATE", "want <count>/<s|m>, count 1-1000000, then ;burst=<n> if fewer may come at once (10/s, 600/m;burst=100), or off; got %q", v)
		return wire.Rate{}
	}
	if r.Off {
		return wire.Rate{}
	}
	return r
}

// defaultQuotaWarnings are the thresholds, in percent of the monthly limit,
// whose crossing is emailed.
const defaultQuotaWarnings = "80,100"

// parseQuotaWarnings reads QUOTA_WARNINGS: comma-separated percentages
// 1–100 (in any order; each once); empty turns warnings off.
func parseQuotaWarnings(e *config.Env) []int {
	v := defaultQuotaWarnings
	if e.IsSet("QUOTA_WARNINGS") {
		v, _ = e.Lookup("QUOTA_WARNINGS")
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f == "" && strings.TrimSpace(v) == "" {
			continue
		}
		p, err := strconv.Atoi(strings.TrimSuffix(f, "%"))
		if err != nil || p < 1 || p > 100 || slices.Contains(out, p) {
			e.Fail("QUOTA_WARNINGS", "want comma-separated percentages 1-100 such as 80,100, or empty, got %q", v)
			return nil
		}
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}
