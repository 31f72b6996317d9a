package main

import (
	"log/slog"
	"time"

	"github.com/gofiber/fiber/v3"

	"pesto/shared/metrics"
	"pesto/shared/sentry"
	"pesto/shared/server"
)

// newApp returns the auth service: the hook on every method of /, and
// /healthz and /metrics.
func newApp(log *slog.Logger, cfg authConfig, store tokenStore, reg *metrics.Registry, rep *sentry.Reporter, now func() time.Time) *fiber.App {
	m := newAuthMetrics(reg)
	app := server.New(server.Options{
		Health:       store.Ping,
		ErrorHandler: errorHandler(log, m, rep),
		Metrics:      reg,
		ReadTimeout:  cfg.ReadTimeout,
		WriteTimeout: cfg.WriteTimeout,
		IdleTimeout:  cfg.IdleTimeout,
		AnyMethod:    true, // the hook answers whatever method the proxy preserves
	})
	app.All("/", handleDecide(store, cfg.Unmetered, now, m))
	return app
}

// Decision outcomes, the label values of pesto_auth_decisions_total.
const (
	outAllowed = iota
	outUnmetered
	outNoToken
	outMalformed
	outNotRegistered
	outRevoked
	outOverQuota
	outError
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"allowed", "unmetered", "no_token", "malformed", "not_registered", "revoked", "over_quota", "error"}

type authMetrics struct {
	outcome     [numOutcomes]*metrics.Counter
	cacheHits   *metrics.Counter
	cacheMisses *metrics.Counter
	redisErrors *metrics.Counter
	faults      *metrics.Counter
}

func newAuthMetrics(reg *metrics.Registry) *authMetrics {
	m := &authMetrics{
		cacheHits:   reg.Counter("pesto_auth_token_cache_total", "Token record lookups by client-side cache result.", "result", "hit"),
		cacheMisses: reg.Counter("pesto_auth_token_cache_total", "Token record lookups by client-side cache result.", "result", "miss"),
		redisErrors: reg.Counter("pesto_redis_errors_total", "Requests answered 500 because Redis was unreachable or timed out."),
		faults:      reg.Counter("pesto_internal_errors_total", "Requests answered 500 for any other fault (corrupt record, error reply)."),
	}
	for i, name := range outcomeNames {
		m.outcome[i] = reg.Counter("pesto_auth_decisions_total", "Auth decisions by outcome.", "outcome", name)
	}
	return m
}
