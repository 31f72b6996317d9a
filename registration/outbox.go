package main

import (
	"context"
	"log/slog"

	"pesto/shared/metrics"
	"pesto/shared/redisconn"
)

// outbox delivers the queued key emails. (Stub: implemented by the outbox work.)
type outbox struct{}

// newOutbox returns the outbox worker of this process; consumer names it in
// the consumer group (unique per process). send is nil when SMTP_URL is
// empty: emails then wait in the stream.
func newOutbox(conn *redisconn.Conn, send func(context.Context, keyEmail) error, log *slog.Logger, reg *metrics.Registry, maxAttempts int, consumer string) *outbox {
	return &outbox{}
}

// Run delivers emails until ctx is done, then returns once the email being
// sent (if any) is finished or abandoned to another consumer.
func (o *outbox) Run(ctx context.Context) error { <-ctx.Done(); return nil }
