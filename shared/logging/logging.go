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

// Token returns what a log may hold of an API key: its first 6 characters
// and a short hash of the whole, never the key itself.
func Token(token string) string {
	sum := sha256.Sum256([]byte(token))
	prefix := token
	if len(prefix) > 6 {
		prefix = prefix[:6]
	}
	return prefix + "…#" + hex.EncodeToString(sum[:4])
}
