package main

import (
	"context"
	"errors"

	"pesto/shared/config"
)

// mailConfig is the email part of the configuration: SMTP_URL, MAIL_FROM,
// MAIL_SUBJECT, MAIL_MAX_ATTEMPTS. (Stub: implemented by the mail work.)
type mailConfig struct {
	MaxAttempts int
}

// loadMailConfig reads and checks the email variables; a bad one is
// recorded on e (config.Env.Fail) and so exits 2 naming it.
func loadMailConfig(e *config.Env) mailConfig { return mailConfig{MaxAttempts: 10} }

// mailer sends key emails over SMTP. A nil *mailer (SMTP_URL empty) keeps
// every email in the outbox.
type mailer struct{}

// newMailer returns the mailer of cfg, or nil when SMTP_URL is empty.
func newMailer(cfg mailConfig) *mailer { return nil }

// Send sends one key email, text and HTML parts.
func (m *mailer) Send(ctx context.Context, k keyEmail) error { return errors.New("not implemented") }
