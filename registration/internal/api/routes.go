// Package api is registration's HTTP layer (SPEC §3–§4): every route on
// one screen (routes.go), a file per handler, the request helpers and their
// messages (request.go), the metrics, and the one table that turns every
// error of the layers below into a status and a body (errors.go). It is the
// only package of registration that imports fiber or knows a status; the
// layers below return errors of their own.
package api

import (
	"context"
	"log/slog"
	"time"

	"github.com/gofiber/fiber/v3"
	"github.com/gofiber/fiber/v3/middleware/cors"

	"pesto/registration/internal/adminjwt"
	"pesto/registration/internal/config"
	"pesto/registration/internal/proof"
	"pesto/registration/internal/rotation"
	"pesto/registration/internal/waitlist"
	"pesto/shared/apikey"
	"pesto/shared/clientip"
	"pesto/shared/metrics"
	"pesto/shared/ratelimit"
	"pesto/shared/redisconn"
	"pesto/shared/sentry"
	"pesto/shared/server"
)

// New returns the registration service (SPEC §3): the signup page, the
// public API, the admin API, and /healthz and /metrics.
func New(log *slog.Logger, cfg config.Config, conn *redisconn.Conn, reg *metrics.Registry, rep *sentry.Reporter) *fiber.App {
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
			AllowOrigins:  cfg.CORSOrigins,
			AllowMethods:  []string{fiber.MethodPost},
			AllowHeaders:  []string{fiber.HeaderContentType, fiber.HeaderAccept, headerProof},
			ExposeHeaders: []string{headerChallenge, fiber.HeaderRetryAfter},
			MaxAge:        3600,
		}))
	}

	app.Get("/", handlePage)
	crossSite := refuseCrossSite(ips, cfg.CORSOrigins)
	proofs := proof.New(cfg.ServerSecret, proof.Bits, time.Now)
	registerLimits := ratelimit.NewLimits("register", cfg.RegisterRate, cfg.IPv6RatePrefixes, cfg.RegisterGlobalRate)
	trialLimits := ratelimit.NewLimits("trial", cfg.TrialRate, cfg.IPv6RatePrefixes, cfg.TrialGlobalRate)
	app.Post("/api/register", crossSite, markResultPage,
		handleRegister(log, conn, cfg.WaitingListMax, newRateLimiter(conn, ips, "register", registerLimits, proofs, m.limited[0]), m))
	app.Post("/api/trial", crossSite,
		handleTrial(log, conn, cfg.KeyStorage, cfg.TrialDomain, newRateLimiter(conn, ips, "trial", trialLimits, proofs, m.limited[1]), m))

	app.Get("/api/pending", guard, handlePending(admin))
	app.Put("/api/approve", guard, handleApprove(log, admin, m))
	app.Put("/api/revoke", guard, handleRevoke(log, conn, keys, m))
	app.Put("/api/reject", guard, handleReject(log, admin, m))
	app.Put("/api/rotate", guard, handleRotate(log, rotation.New(conn, keys, rotation.NewSeal(cfg.ServerSecret)), m))
	return app
}
