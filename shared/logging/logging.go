// Package logging makes the JSON-lines logger both services write to stdout,
// and hides secrets from it.
package logging

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
)

// New returns a logger that writes JSON lines at level and above to w, each
// carrying the service and environment names.
func New(w io.Writer, level slog.Level, service, environment string) *slog.Logger {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})
	return slog.New(h).With("service", service, "environment", environment)
}

// Token returns what a log may hold of an API key: a quarter of it at the
// start, 6 characters at most (so a short legacy key is not logged whole),
// and a short hash of the whole.
func Token(token string) string {
	sum := sha256.Sum256([]byte(token))
	return token[:min(6, len(token)/4)] + "…#" + hex.EncodeToString(sum[:4])
}
