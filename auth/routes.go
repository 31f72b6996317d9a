package main

import (
	"log/slog"
	"time"

	"github.com/gofiber/fiber/v3"

	"pesto/shared/clientip"
	"pesto/shared/metrics"
	"pesto/shared/ratelimit"
	"pesto/shared/sentry"
	"pesto/shared/server"
)

// newApp returns the auth service: the hook on every method of /, GET
// /api/usage, and /healthz and /metrics.
func newApp(log *slog.Logger, cfg authConfig, store tokenStore, acct accountStore, reg *metrics.Registry, rep *sentry.Reporter, now func() time.Time) *fiber.App {
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
	warn := newWarnings(cfg.QuotaWarnings, acct.QueueWarning, log, reg)
	mt := metering{unmetered: cfg.Unmetered, rate: cfg.KeyRate}
	app.All("/", handleDecide(store, mt, now, m, warn))
	usageLimits := ratelimit.NewLimits(usageRoute, cfg.UsageRate, cfg.IPv6RatePrefixes, cfg.UsageGlobalRate)
	app.Get("/api/usage", handleUsage(acct, clientip.Resolver{Trusted: cfg.TrustedProxies}, usageLimits, mt, now))
	return app
}
