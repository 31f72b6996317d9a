// Package config reads the environment of both services (SPEC §5): the
// variables both share (LoadCommon) and the formats both use (Env.Rate,
// Env.IPv6RatePrefixes, Env.TrustedProxies), and the rule that holds their
// rates (Env.RateBelow). Each service parses all of its variables in one
// place, its configuration file (auth/config.go and registration's
// internal/config), through an Env; the first bad one is returned as an
// *Error that names it, and the program exits 2 with that one line.
package config

import (
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"pesto/shared/sentry"
	"pesto/shared/wire"
)

// Error names the variable whose value is bad.
type Error struct {
	Var string
	Msg string
}

func (e *Error) Error() string { return e.Var + ": " + e.Msg }

// Env reads variables through lookup (os.LookupEnv in production, a map in
// tests) and keeps the first error.
type Env struct {
	lookup func(string) (string, bool)
	err    error
}

// New returns an Env that reads through lookup.
func New(lookup func(string) (string, bool)) *Env { return &Env{lookup: lookup} }

// Err returns the first error, or nil.
func (e *Env) Err() error { return e.err }

// Fail records err for variable name unless an earlier error is kept.
func (e *Env) Fail(name, format string, args ...any) {
	if e.err == nil {
		e.err = &Error{Var: name, Msg: fmt.Sprintf(format, args...)}
	}
}

// Lookup returns the value of name, trimmed, and whether it is set and not
// empty: an empty variable means its default.
func (e *Env) Lookup(name string) (string, bool) {
	v, _ := e.lookup(name)
	v = strings.TrimSpace(v)
	return v, v != ""
}

// IsSet reports whether name is set, even to "".
func (e *Env) IsSet(name string) bool {
	_, ok := e.lookup(name)
	return ok
}

// NotEmpty reports whether name is set to anything but "", as the Go
// runtime reads its own variables (GOMAXPROCS): untrimmed.
func (e *Env) NotEmpty(name string) bool {
	v, _ := e.lookup(name)
	return v != ""
}

// String returns the value of name, or def when it is unset or empty.
func (e *Env) String(name, def string) string {
	if v, ok := e.Lookup(name); ok {
		return v
	}
	return def
}

// Int returns the integer value of name within [lo, hi], or def.
func (e *Env) Int(name string, def, lo, hi int64) int64 {
	v, ok := e.Lookup(name)
	if !ok {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		e.Fail(name, "want an integer from %d to %d, got %q", lo, hi, v)
		return def
	}
	return n
}

// Duration returns the non-negative duration value of name (Go syntax:
// "10s", "1m30s"), or def.
func (e *Env) Duration(name string, def time.Duration) time.Duration {
	v, ok := e.Lookup(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		e.Fail(name, "want a duration such as 10s or 1m, got %q", v)
		return def
	}
	return d
}

// Common is the configuration both services share.
type Common struct {
	Port            int
	Redis           rueidis.ClientOption
	RedisURL        string // with any password masked, for logs
	Environment     string
	LogLevel        slog.Level
	SentryDSN       sentry.DSN // zero: no reporting
	ShutdownTimeout time.Duration
	// KeyStorage is how new token records are stored (KEY_STORAGE: plain,
	// the old services' format, or hashed); both forms are always read.
	KeyStorage wire.KeyStorage
}

// LoadCommon reads the variables both services share.
func LoadCommon(e *Env) Common {
	c := Common{
		Port:            int(e.Int("PORT", 3000, 0, 65535)),
		Environment:     e.String("ENVIRONMENT", "development"),
		ShutdownTimeout: e.Duration("SHUTDOWN_TIMEOUT", 10*time.Second),
	}
	c.Redis, c.RedisURL = redisURL(e, e.String("REDIS_URL", "redis://localhost:6379"))
	c.LogLevel = logLevel(e, e.String("LOG_LEVEL", "info"))
	c.SentryDSN = sentryDSN(e, e.String("SENTRY_DSN", ""))
	storage, ok := wire.ParseKeyStorage(e.String("KEY_STORAGE", "plain"))
	if !ok {
		e.Fail("KEY_STORAGE", "want plain or hashed, got %q", e.String("KEY_STORAGE", ""))
	}
	c.KeyStorage = storage
	return c
}

func redisURL(e *Env, v string) (rueidis.ClientOption, string) {
	opt, err := rueidis.ParseURL(v)
	if err != nil {
		e.Fail("REDIS_URL", "%s", strings.ReplaceAll(err.Error(), v, mask(v)))
		return opt, ""
	}
	if len(opt.InitAddress) == 0 || opt.InitAddress[0] == "" {
		e.Fail("REDIS_URL", "no host in %q", mask(v))
	}
	// Every connection is read in the background, so that one Redis closed
	// (a restart, CLIENT KILL) is known to be closed, and replaced, before
	// a call uses it. Otherwise a connection used by one caller at a time is
	// read only for a reply: the next command, a count say, is written to
	// the closed connection, fails (EOF), and cannot be tried again, as it
	// may have been executed.
	opt.AlwaysPipelining = true
	return opt, mask(v)
}

// mask returns a URL with its password replaced by "xxxxx", for logs. A
// value that does not parse is replaced whole.
func mask(v string) string {
	u, err := url.Parse(v)
	if err != nil {
		return "(unparsable URL)"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

func logLevel(e *Env, v string) slog.Level {
	switch strings.ToLower(v) {
	case "debug":
		return slog.LevelDebug
	case "info":
		return slog.LevelInfo
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	e.Fail("LOG_LEVEL", "want debug, info, warn or error, got %q", v)
	return slog.LevelInfo
}

// sentryDSN checks the DSN once, at start; the reporter takes it as checked.
func sentryDSN(e *Env, v string) sentry.DSN {
	dsn, err := sentry.ParseDSN(v)
	if err != nil {
		e.Fail("SENTRY_DSN", "%v", err)
	}
	return dsn
}
