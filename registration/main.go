// Command registration takes signups for Pesto API keys, hands out trial
// keys, and lets an admin approve, reject, revoke or rotate keys.
//
// This package only wires (run) and holds the subcommands admin-token and
// migrate-keys. The service is in layers under internal/, imports running
// one way: api (the HTTP layer, the only one that imports fiber or knows a
// status) over waitlist, rotation, trial, outbox and migrate, over config,
// adminjwt, address, keygen and proof.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"pesto/registration/internal/api"
	"pesto/registration/internal/config"
	"pesto/registration/internal/outbox"
	"pesto/registration/internal/waitlist"
	"pesto/shared/cli"
	"pesto/shared/logging"
	"pesto/shared/metrics"
	"pesto/shared/redisconn"
	"pesto/shared/sentry"
	"pesto/shared/server"
)

func main() {
	cli.Main("registration", func(ctx context.Context, args []string) error {
		return run(ctx, args, os.LookupEnv, os.Stdout, nil)
	})
}

// run is the whole program. ready, when not nil, is called with the
// listening address (tests use port 0).
func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout io.Writer, ready func(net.Addr)) error {
	cfg, err := config.Load(lookupEnv)
	if len(args) > 0 {
		if handled, err := cli.Common(args, "registration", version, cfg.Port, stdout); handled {
			return err
		}
		switch args[0] {
		case "admin-token":
			return adminToken(args[1:], cfg, err, stdout, time.Now())
		case "migrate-keys":
			return migrateKeys(ctx, args[1:], cfg, err, stdout)
		}
		return errUsage
	}
	if err != nil {
		return err
	}

	log := logging.New(stdout, cfg.LogLevel, "registration", cfg.Environment)
	log.Info("starting", "version", version, "redis", cfg.RedisURL,
		"register_rate", cfg.RegisterRate.String(), "trial_rate", cfg.TrialRate.String(),
		"admin_api", len(cfg.AdminSecret) > 0 || len(cfg.AdminPublicKey) > 0)
	if cfg.ServerSecretRandom {
		log.Warn("SERVER_SECRET and ADMIN_JWT_SECRET are empty: the server secret is random for this process, " +
			"so a rotation remembered before a restart cannot be retried; set SERVER_SECRET")
	}
	conn := redisconn.Dial(cfg.RedisOptions(), log)
	defer conn.Close()

	rep := sentry.New(cfg.SentryDSN, "registration", cfg.Environment, version, log)
	defer rep.Flush()

	reg := metrics.NewRegistry()
	var send outbox.Sender // none: emails wait in the outbox
	if m := outbox.NewMailer(cfg.Mail); m != nil {
		send = m
	}
	ob := outbox.New(conn, send, log, reg, cfg.Mail.MaxAttempts, consumerName())
	obCtx, stopOutbox := context.WithCancel(context.Background())
	obDone := make(chan error, 1)
	go func() { obDone <- ob.Run(obCtx) }()

	go waitlist.Warm(obCtx, conn, log)

	app := api.New(log, cfg, conn, reg, rep)
	err = server.Serve(ctx, app, fmt.Sprintf(":%d", cfg.Port), cfg.ShutdownTimeout, log, ready)
	// The outbox stops after the HTTP drain: an approve answered during
	// the drain has queued its email, which stays in the stream anyway.
	stopOutbox()
	if oerr := <-obDone; oerr != nil && !errors.Is(oerr, context.Canceled) {
		log.Error("outbox stopped", "err", oerr.Error())
	}
	return err
}

// consumerName names this process in the outbox's consumer group: the host
// name (the container's, under Compose) and a random suffix, unique even
// when a restarted container keeps its name.
func consumerName() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "registration"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}
