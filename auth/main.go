// Command auth is Pesto's API-key check for a reverse proxy's auth hook
// (Traefik ForwardAuth, nginx auth_request, Caddy forward_auth), and the
// answer of GET /api/usage.
//
// One package, a file per concern: main.go wires (run); config.go reads
// every variable; routes.go has every route; decide.go is the hook and
// usage.go /api/usage, which share quotapath.go, the one path from a key to
// its month's quota state; store.go is auth's Redis (records through
// shared/apikey and the client-side cache, tokencache.go); groupcommit.go
// counts calls together and counter.go in Redis (its scripts), where
// rate.go keeps a key's rate window in the same script call, each group in
// the Redis Cluster slot of its counters (slot.go);
// quotaheaders.go writes the quota headers, warnings.go the quota warnings,
// metrics.go the metrics; errors.go is the one table of answers.
package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"

	"pesto/shared/cli"
	"pesto/shared/logging"
	"pesto/shared/metrics"
	"pesto/shared/redisconn"
	"pesto/shared/sentry"
	"pesto/shared/server"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	cli.Main("auth", func(ctx context.Context, args []string) error {
		return run(ctx, args, os.LookupEnv, os.Stdout, nil)
	})
}

// gcPercent is auth's GOGC when the environment sets none.
const gcPercent = 50

// startProcs is GOMAXPROCS as the runtime chose it at start: the CPUs the
// process may use (a container's CPU limit included).
var startProcs = runtime.GOMAXPROCS(0)

// defaultProcs is auth's GOMAXPROCS when the environment sets none: half
// of startProcs, at least one. auth shares its machine with Redis, the
// proxy and the API behind it, and most of a call is system calls (reading
// the request, writing the answer, the Redis round trip) rather than Go
// code; with fewer Ps the runtime spends less waking and spinning threads
// for the many short waits. make bench, 2 cores: auth's CPU per call 12%
// lower, its p99 about half (docs/performance.md).
func defaultProcs() int { return max(1, startProcs/2) }

var errUsage = fmt.Errorf("%w: auth [healthcheck|version]", cli.ErrUsage)

// run is the whole program. ready, when not nil, is called with the
// listening address (tests use port 0).
func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout io.Writer, ready func(net.Addr)) error {
	cfg, err := loadConfig(lookupEnv)
	if len(args) > 0 {
		if handled, err := cli.Common(args, "auth", version, cfg.Port, stdout); handled {
			return err
		}
		return errUsage
	}
	if err != nil {
		return err
	}

	// A small heap: collected at 50% growth rather than Go's 100%, unless
	// GOGC says otherwise. Most of auth's heap under load is the token
	// cache (about 0.42 KiB a key, tokenCache); under 64 connections and
	// 10,000 keys peak RSS was 18 MiB, for no CPU that make bench can tell
	// from the noise: collection is about 1% of auth's CPU. (GOGC 25 took
	// another 3 MiB off the peak for about 1 µs a call, and a collection
	// during start: docs/performance.md.)
	if !cfg.GOGCSet {
		debug.SetGCPercent(gcPercent)
	}
	// Half the CPUs, unless GOMAXPROCS says otherwise (the runtime has
	// applied it already).
	if !cfg.GOMAXPROCSSet {
		runtime.GOMAXPROCS(defaultProcs())
	}

	log := logging.New(stdout, cfg.LogLevel, "auth", cfg.Environment)
	log.Info("starting", "version", version, "redis", cfg.RedisURL, "token_cache_ttl", cfg.CacheTTL.String(), "key_storage", cfg.KeyStorage.String(),
		"key_rate", cmp.Or(cfg.KeyRate.String(), "off"))
	conn := redisconn.Dial(cfg.redisOptions(), log)
	defer conn.Close()
	counters := redisconn.Dial(cfg.counterOptions(), log)
	defer counters.Close()

	rep := sentry.New(cfg.SentryDSN, "auth", cfg.Environment, version, log)
	defer rep.Flush()

	reg := metrics.NewRegistry()
	store := newRedisStore(conn, counters, cfg.CacheTTL, cfg.KeyStorage, log)
	app := newApp(log, cfg, store, store, reg, rep, timeNow)
	return server.Serve(ctx, app, fmt.Sprintf(":%d", cfg.Port), cfg.ShutdownTimeout, log, ready)
}
