// Package config reads registration's environment (SPEC §5, and what the
// issues added since): every variable, parsed and checked here, into one
// Config; the first bad one is a *config.Error of shared/config, which
// names it (the program exits 2 with that one line).
package config

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	netmail "net/mail"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/rueidis"

	"pesto/registration/internal/address"
	shared "pesto/shared/config"
)

// Defaults of SPEC §3–§5 that only registration has.
const (
	defaultTrialDomain  = "pesto.teknologiumum.com"
	defaultRegisterRate = "10/h"
	defaultTrialRate    = "5/h"
	// The global caps of the two public POST routes, whatever the clients.
	defaultRegisterGlobalRate = "100/h"
	defaultTrialGlobalRate    = "200/h"
	defaultMaxBody            = 16 << 10
	defaultWaitingList        = 10_000
	// minAdminSecret is the shortest ADMIN_JWT_SECRET accepted (HS256 wants
	// a key at least as long as its hash).
	minAdminSecret = 32
)

// Config is registration's configuration.
type Config struct {
	shared.Common
	// TrialDomain is the domain of trial records' emails.
	TrialDomain string
	// RegisterRate and TrialRate are the per-client-IP limits of the two
	// public POST routes: below their global caps, at every IPv6 multiple
	// (config.Env.RateBelow).
	RegisterRate, TrialRate shared.Rate
	// RegisterGlobalRate and TrialGlobalRate cap each route over every
	// client together.
	RegisterGlobalRate, TrialGlobalRate shared.Rate
	// IPv6RatePrefixes are the prefixes an IPv6 client is counted at, each
	// with its multiple of the route's rate.
	IPv6RatePrefixes []shared.RatePrefix
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// WaitingListMax is the most signups the waiting list holds; a new
	// person beyond it is refused (waitlist.ErrListFull).
	WaitingListMax int
	// MaxBody is the largest request body read, in bytes.
	MaxBody int
	// CORSOrigins are the origins allowed to call the public routes from a
	// browser; none means no CORS headers at all.
	CORSOrigins []string
	// AdminSecret (HS256) and AdminPublicKey (EdDSA) verify admin JWTs;
	// with neither the admin API is off.
	AdminSecret    []byte
	AdminPublicKey ed25519.PublicKey
	// ServerSecret is registration's own secret, never stored in Redis,
	// from which each use derives its key: it seals the memory of
	// rotations and signs proof-of-work challenges. SERVER_SECRET (at least 32 bytes); unset, derived from
	// ADMIN_JWT_SECRET; neither, random for this process
	// (ServerSecretRandom).
	ServerSecret       []byte
	ServerSecretRandom bool
	Mail               Mail
}

// Load reads every variable through lookupEnv.
func Load(lookupEnv func(string) (string, bool)) (Config, error) {
	e := shared.New(lookupEnv)
	c := Config{
		Common:             shared.LoadCommon(e),
		TrialDomain:        trialDomain(e, e.String("TRIAL_EMAIL_DOMAIN", defaultTrialDomain)),
		RegisterRate:       e.Rate("REGISTER_RATE", defaultRegisterRate),
		TrialRate:          e.Rate("TRIAL_RATE", defaultTrialRate),
		RegisterGlobalRate: e.Rate("REGISTER_GLOBAL_RATE", defaultRegisterGlobalRate),
		TrialGlobalRate:    e.Rate("TRIAL_GLOBAL_RATE", defaultTrialGlobalRate),
		IPv6RatePrefixes:   e.IPv6RatePrefixes(),
		TrustedProxies:     e.TrustedProxies(),
		MaxBody:            int(e.Int("MAX_BODY_BYTES", defaultMaxBody, 256, 64<<20)),
		WaitingListMax:     int(e.Int("WAITING_LIST_MAX", defaultWaitingList, 1, 1_000_000)),
		CORSOrigins:        corsOrigins(e),
		AdminSecret:        adminSecret(e),
		AdminPublicKey:     adminPublicKey(e),
		Mail:               loadMail(e),
	}
	c.ServerSecret, c.ServerSecretRandom = serverSecret(e, c.AdminSecret)
	e.RateBelow("REGISTER_RATE", c.RegisterRate, c.IPv6RatePrefixes, "REGISTER_GLOBAL_RATE", c.RegisterGlobalRate)
	e.RateBelow("TRIAL_RATE", c.TrialRate, c.IPv6RatePrefixes, "TRIAL_GLOBAL_RATE", c.TrialGlobalRate)
	return c, e.Err()
}

// serverSecret reads SERVER_SECRET, at least 32 bytes. Unset, the secret is
// derived from the admin JWT secret (HMAC-SHA256 of a label: another key
// than the admin's), so that every replica configured alike has the same;
// without either, it is random for this process (random true).
func serverSecret(e *shared.Env, admin []byte) (secret []byte, random bool) {
	if v, ok := e.Lookup("SERVER_SECRET"); ok {
		if len(v) < minAdminSecret {
			e.Fail("SERVER_SECRET", "want at least %d bytes, got %d", minAdminSecret, len(v))
			return nil, false
		}
		return []byte(v), false
	}
	if len(admin) > 0 {
		mac := hmac.New(sha256.New, admin)
		mac.Write([]byte("pesto server secret"))
		return mac.Sum(nil), false
	}
	secret = make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return secret, true
}

// trialDomain checks that trial-<x>@domain is an address net/mail accepts.
func trialDomain(e *shared.Env, d string) string {
	if _, err := address.Parse("trial-x@" + d); err != nil || strings.ContainsAny(d, "@ ") {
		e.Fail("TRIAL_EMAIL_DOMAIN", "want a domain such as example.com, got %q", d)
	}
	return d
}

// corsOrigins reads comma-separated origins (scheme://host[:port]), or "*".
func corsOrigins(e *shared.Env) []string {
	v, _ := e.Lookup("CORS_ORIGINS")
	var out []string
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if f == "*" {
			out = append(out, f)
			continue
		}
		u, err := url.Parse(f)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" ||
			strings.ContainsAny(u.Host, "*") || u.Hostname() == "" {
			e.Fail("CORS_ORIGINS", "want comma-separated origins such as https://example.com, got %q", f)
			return nil
		}
		out = append(out, u.Scheme+"://"+strings.ToLower(u.Host))
	}
	return out
}

func adminSecret(e *shared.Env) []byte {
	v, ok := e.Lookup("ADMIN_JWT_SECRET")
	if !ok {
		return nil
	}
	if len(v) < minAdminSecret {
		e.Fail("ADMIN_JWT_SECRET", "want at least %d bytes, got %d", minAdminSecret, len(v))
		return nil
	}
	return []byte(v)
}

// adminPublicKey reads an Ed25519 public key in PEM, given as the PEM text
// itself or as the path of a PEM file.
func adminPublicKey(e *shared.Env) ed25519.PublicKey {
	v, ok := e.Lookup("ADMIN_JWT_PUBLIC_KEY")
	if !ok {
		return nil
	}
	pem := []byte(v)
	if !strings.HasPrefix(v, "-----BEGIN") {
		b, err := os.ReadFile(v)
		if err != nil {
			e.Fail("ADMIN_JWT_PUBLIC_KEY", "want an Ed25519 public key in PEM or the path of one: %v", err)
			return nil
		}
		pem = b
	}
	key, err := parseEd25519Public(pem)
	if err != nil {
		e.Fail("ADMIN_JWT_PUBLIC_KEY", "want an Ed25519 public key in PEM: %v", err)
		return nil
	}
	return key
}

func parseEd25519Public(pem []byte) (ed25519.PublicKey, error) {
	k, err := jwt.ParseEdPublicKeyFromPEM(pem)
	if err != nil {
		return nil, err
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("not an Ed25519 key")
	}
	return pub, nil
}

// Per-connection buffers of the Redis client; rueidis's defaults (1 MiB per
// connection) would dwarf the service.
const bufferEachConn = 64 << 10

// RedisOptions: registration reads its own writes, so it never uses the
// client-side cache (a cached read could be stale for a moment). Its traffic
// is light: one pipelined connection (plus the outbox's blocking reads) and
// a small ring are plenty, and save memory.
func (c Config) RedisOptions() rueidis.ClientOption {
	opt := c.Redis
	opt.ClientName = "pesto-registration"
	opt.DisableCache = true
	opt.CacheSizeEachConn = 1 << 10
	opt.ReadBufferEachConn = bufferEachConn
	opt.WriteBufferEachConn = bufferEachConn
	opt.PipelineMultiplex = -1 // 2^0: one connection
	opt.RingScaleEachConn = 8  // 2^8 commands in flight per connection
	return opt
}

// Defaults of the email variables (SPEC §5).
const (
	DefaultMailFrom    = "Pesto <pesto@teknologiumum.com>"
	DefaultMailSubject = "Your Pesto API key"
	defaultMaxAttempts = 10
	SMTPTimeout        = 10 * time.Second
)

// TLSMode is how the SMTP connection is encrypted.
type TLSMode int

const (
	TLSStartTLS      TLSMode = iota // STARTTLS required (smtp://, the default)
	TLSImplicit                     // TLS from the first byte (smtps://)
	TLSOpportunistic                // STARTTLS when offered (?tls=opportunistic)
	TLSNone                         // plaintext (?tls=none), local development only
)

// SMTPServer is a parsed SMTP_URL.
type SMTPServer struct {
	Host     string
	Port     int
	TLS      TLSMode
	Username string // "" means no SMTP AUTH
	Password string
}

// Mail is the email part of the configuration: SMTP_URL, MAIL_FROM,
// MAIL_SUBJECT, MAIL_MAX_ATTEMPTS.
type Mail struct {
	SMTP        *SMTPServer // nil when SMTP_URL is empty: emails wait in the outbox
	From        *netmail.Address
	Subject     string
	MaxAttempts int
	// Timeout bounds every SMTP operation (dial, each command, the data).
	Timeout time.Duration
	// TLSConfig, when set, replaces the default TLS settings (system roots,
	// server name from SMTP_URL). Tests use it to trust their own CA.
	TLSConfig *tls.Config
}

// loadMail reads and checks the email variables; a bad one is
// recorded on e (config.Env.Fail) and so exits 2 naming it.
func loadMail(e *shared.Env) Mail {
	c := Mail{
		Subject:     e.String("MAIL_SUBJECT", DefaultMailSubject),
		MaxAttempts: int(e.Int("MAIL_MAX_ATTEMPTS", defaultMaxAttempts, 1, 1000)),
		Timeout:     SMTPTimeout,
	}
	if v, ok := e.Lookup("SMTP_URL"); ok {
		s, err := parseSMTPURL(v)
		if err != nil {
			e.Fail("SMTP_URL", "%v", err) // never echoes the value: it may hold a password
		}
		c.SMTP = s
	}
	from, err := netmail.ParseAddress(e.String("MAIL_FROM", DefaultMailFrom))
	if err != nil {
		e.Fail("MAIL_FROM", "want an address such as %q: %v", DefaultMailFrom, err)
		from = &netmail.Address{Address: "pesto@teknologiumum.com"}
	}
	c.From = from
	if strings.IndexFunc(c.Subject, unicode.IsControl) >= 0 {
		e.Fail("MAIL_SUBJECT", "control characters are not allowed")
	}
	return c
}

// parseSMTPURL reads smtp://[user[:password]@]host[:port][?tls=opportunistic|none]
// or smtps://[user[:password]@]host[:port]. Its errors never quote the
// URL, which may hold a password, nor any part of it but the scheme: a
// password pasted unescaped ("pa?ss", "pa#ss") ends up in the port, the
// query or the fragment, so their values are not shown either.
func parseSMTPURL(v string) (*SMTPServer, error) {
	u, err := url.Parse(v)
	if err != nil {
		return nil, errors.New("not a URL; want smtp://user:password@host:587 or smtps://user:password@host:465")
	}
	s := &SMTPServer{Host: u.Hostname()}
	defaultPort := 587
	switch u.Scheme {
	case "smtp":
		s.TLS = TLSStartTLS
	case "smtps":
		s.TLS, defaultPort = TLSImplicit, 465
	default:
		return nil, errors.New("unknown scheme; want smtp:// (STARTTLS) or smtps:// (implicit TLS)")
	}
	if u.Opaque != "" || s.Host == "" {
		return nil, errors.New("no host; want smtp://user:password@host:587")
	}
	if u.Path != "" && u.Path != "/" {
		return nil, errors.New("a path is not allowed")
	}
	if u.Fragment != "" {
		return nil, errors.New("a fragment is not allowed")
	}
	s.Port = defaultPort
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return nil, errors.New("port: want a number from 1 to 65535")
		}
		s.Port = n
	} else if strings.HasSuffix(u.Host, ":") {
		return nil, errors.New("empty port")
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, errors.New("bad query string")
	}
	for k, vs := range q {
		if k != "tls" {
			return nil, errors.New("unknown parameter: only tls= is known")
		}
		if len(vs) != 1 {
			return nil, errors.New("tls is given more than once")
		}
		switch {
		case vs[0] == "opportunistic" && s.TLS == TLSStartTLS:
			s.TLS = TLSOpportunistic
		case vs[0] == "none" && s.TLS == TLSStartTLS:
			s.TLS = TLSNone
		case s.TLS == TLSImplicit:
			return nil, errors.New("smtps:// is always TLS: tls= is only for smtp://")
		default:
			return nil, errors.New("tls=: want opportunistic or none")
		}
	}
	if u.User != nil {
		// url.Parse has already percent-decoded both.
		s.Username = u.User.Username()
		s.Password, _ = u.User.Password()
		if s.Username == "" {
			return nil, errors.New("a password without a user name")
		}
	}
	return s, nil
}
