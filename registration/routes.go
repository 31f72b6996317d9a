package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/gofiber/fiber/v3"
	"github.com/gofiber/fiber/v3/middleware/cors"

	"pesto/registration/internal/adminjwt"
	"pesto/registration/internal/config"
	"pesto/registration/internal/rotation"
	"pesto/registration/internal/waitlist"
	"pesto/shared/apikey"
	"pesto/shared/clientip"
	"pesto/shared/metrics"
	"pesto/shared/redisconn"
	"pesto/shared/sentry"
	"pesto/shared/server"
)

// newApp returns the registration service (SPEC §3): the signup page, the
// public API, the admin API, and /healthz and /metrics.
func newApp(log *slog.Logger, cfg config.Config, conn *redisconn.Conn, reg *metrics.Registry, rep *sentry.Reporter) *fiber.App {
	m := newRegMetrics(reg)
	app := server.New(server.Options{
		Health:       func(ctx context.Context) error { return conn.Ping(ctx, time.Second) },
		ErrorHandler: errorHandler(log, m, rep),
		Metrics:      reg,
		// A body over MAX_BODY_BYTES is refused (413) by the HTTP layer,
		// before any handler, having buffered at most MAX_BODY_BYTES.
		BodyLimit: cfg.MaxBody,
		// The client IP is not fiber's (it would take the leftmost
		// X-Forwarded-For value, which the client writes): see clientip.Resolver.
	})
	ips := clientip.Resolver{Trusted: cfg.TrustedProxies}
	keys := apikey.Keys{Storage: cfg.KeyStorage}
	admin := waitlist.New(conn, keys, log)
	guard := requireAdmin(adminjwt.NewVerifier(cfg.AdminSecret, cfg.AdminPublicKey))

	public := []string{"/api/register", "/api/trial"}
	if len(cfg.CORSOrigins) > 0 {
		app.Use(public, cors.New(cors.Config{
			AllowOrigins: cfg.CORSOrigins,
			AllowMethods: []string{fiber.MethodPost},
			AllowHeaders: []string{fiber.HeaderContentType, fiber.HeaderAccept},
			MaxAge:       3600,
		}))
	}

	app.Get("/", handlePage)
	crossSite := refuseCrossSite(ips, cfg.CORSOrigins)
	app.Post("/api/register", crossSite, markResultPage,
		handleRegister(log, conn, cfg.WaitingListMax, newRateLimiter(conn, ips, "register", cfg.RegisterRate, cfg.RegisterGlobalRate, cfg.IPv6RatePrefixes, m.limited[0]), m))
	app.Post("/api/trial", crossSite,
		handleTrial(log, conn, cfg.KeyStorage, cfg.TrialDomain, newRateLimiter(conn, ips, "trial", cfg.TrialRate, cfg.TrialGlobalRate, cfg.IPv6RatePrefixes, m.limited[1]), m))

	app.Get("/api/pending", guard, handlePending(admin))
	app.Put("/api/approve", guard, handleApprove(log, admin, m))
	app.Put("/api/revoke", guard, handleRevoke(log, conn, keys, m))
	app.Put("/api/reject", guard, handleReject(log, admin, m))
	app.Put("/api/rotate", guard, handleRotate(log, rotation.New(conn, keys), m))
	return app
}

type regMetrics struct {
	registered  *metrics.Counter
	duplicates  *metrics.Counter
	trials      *metrics.Counter
	approvals   *metrics.Counter
	revokes     *metrics.Counter
	rejects     *metrics.Counter
	rotations   *metrics.Counter
	limited     [2]*metrics.Counter // register, trial
	redisErrors *metrics.Counter
	faults      *metrics.Counter
}

func newRegMetrics(reg *metrics.Registry) *regMetrics {
	const (
		regHelp   = "Signups by result: created, or duplicate of a listed person."
		adminHelp = "Admin actions done."
		limHelp   = "Requests refused by a per-client rate limit, by route."
	)
	return &regMetrics{
		registered:  reg.Counter("pesto_registrations_total", regHelp, "result", "created"),
		duplicates:  reg.Counter("pesto_registrations_total", regHelp, "result", "duplicate"),
		trials:      reg.Counter("pesto_trials_total", "Trial keys created."),
		approvals:   reg.Counter("pesto_admin_actions_total", adminHelp, "action", "approve"),
		revokes:     reg.Counter("pesto_admin_actions_total", adminHelp, "action", "revoke"),
		rejects:     reg.Counter("pesto_admin_actions_total", adminHelp, "action", "reject"),
		rotations:   reg.Counter("pesto_admin_actions_total", adminHelp, "action", "rotate"),
		limited:     [2]*metrics.Counter{reg.Counter("pesto_rate_limited_total", limHelp, "route", "register"), reg.Counter("pesto_rate_limited_total", limHelp, "route", "trial")},
		redisErrors: reg.Counter("pesto_redis_errors_total", "Requests answered 500 because Redis was unreachable or timed out."),
		faults:      reg.Counter("pesto_internal_errors_total", "Requests answered 500 for any other fault."),
	}
}
