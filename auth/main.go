// Command auth is Pesto's API-key check for a reverse proxy's auth hook
// (Traefik ForwardAuth, nginx auth_request, Caddy forward_auth).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"pesto/shared/config"
	"pesto/shared/logging"
	"pesto/shared/metrics"
	"pesto/shared/redisconn"
	"pesto/shared/sentry"
	"pesto/shared/server"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, nil)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode prints err as one line and returns the process exit code: 2 for
// a configuration or usage error, 1 for any other, 0 for none.
func exitCode(err error, stderr io.Writer) int {
	var ec exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ec):
		return int(ec)
	}
	fmt.Fprintln(stderr, "auth:", err)
	var cfgErr *config.Error
	if errors.As(err, &cfgErr) || errors.Is(err, errUsage) {
		return 2
	}
	return 1
}

// exitError ends the program with a code and no message (healthcheck).
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit %d", int(e)) }

var errUsage = errors.New("usage: auth [healthcheck|version]")

// run is the whole program. ready, when not nil, is called with the
// listening address (tests use port 0).
func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout io.Writer, ready func(net.Addr)) error {
	cfg, err := loadConfig(lookupEnv)
	if len(args) > 0 {
		switch args[0] {
		case "version":
			fmt.Fprintln(stdout, "auth", version)
			return nil
		case "healthcheck":
			port := "3000"
			if err == nil {
				port = fmt.Sprint(cfg.Port)
			}
			if code := server.Healthcheck(port); code != 0 {
				return exitError(code)
			}
			return nil
		default:
			return errUsage
		}
	}
	if err != nil {
		return err
	}

	log := logging.New(stdout, cfg.LogLevel, "auth", cfg.Environment)
	log.Info("starting", "version", version, "redis", cfg.RedisURL, "token_cache_ttl", cfg.CacheTTL.String())
	conn := redisconn.Dial(cfg.redisOptions(), log)
	defer conn.Close()

	rep, err := sentry.New(cfg.SentryDSN, "auth", cfg.Environment, version, log)
	if err != nil {
		return &config.Error{Var: "SENTRY_DSN", Msg: err.Error()}
	}
	defer flush(rep)

	reg := metrics.NewRegistry()
	app := newApp(log, cfg, newRedisStore(conn, cfg.CacheTTL), reg, rep, timeNow)
	return server.Serve(ctx, app, fmt.Sprintf(":%d", cfg.Port), cfg.ShutdownTimeout, log, ready)
}

// flush sends the error reports still queued, for up to two seconds.
func flush(rep *sentry.Reporter) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rep.Close(ctx)
}
