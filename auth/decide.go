package main

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v3"
	"github.com/redis/rueidis"

	"pesto/shared/logging"
	"pesto/shared/metrics"
	"pesto/shared/wire"
)

// Limits of the decision.
const (
	// redisTimeout bounds the Redis work of one decision, so that a dead or
	// slow Redis is answered 500 within a second, never a hang. Requests
	// within deadlineStep of each other share one deadline.
	redisTimeout = 500 * time.Millisecond
	deadlineStep = 50 * time.Millisecond
)

// headerToken carries the API key.
const headerToken = "X-Pesto-Token"

func timeNow() time.Time { return time.Now() }

// handleDecide answers the auth hook (SPEC §2): 200 lets the request
// through; every other answer is an errorCode, or an error that
// errorCodeOf maps to one, for the error handler.
func handleDecide(store tokenStore, unmetered string, now func() time.Time, m *authMetrics) fiber.Handler {
	deadlines := newDeadlines(redisTimeout, deadlineStep)
	return func(c fiber.Ctx) error {
		token := c.Get(headerToken)
		if token == "" {
			m.outcome[outNoToken].Inc()
			return eNoToken
		}
		if !wire.WellFormedToken(token) {
			m.outcome[outMalformed].Inc()
			return eNotRegistered
		}
		// fiber reuses the header's bytes after the handler returns, and the
		// client-side cache may keep the key: give it its own copy.
		token = strings.Clone(token)

		ctx := deadlines.context(time.Now())
		raw, cached, err := store.Record(ctx, token)
		if cached {
			m.cacheHits.Inc()
		} else {
			m.cacheMisses.Inc()
		}
		switch {
		case errors.Is(err, errMissing):
			m.outcome[outNotRegistered].Inc()
			return err
		case err != nil:
			m.outcome[outError].Inc()
			return err
		}
		rec, err := wire.DecodeTokenRecord(raw)
		if err != nil {
			m.outcome[outError].Inc()
			return fmt.Errorf("token %s: %w", logging.Token(token), err)
		}
		if rec.Revoked {
			m.outcome[outRevoked].Inc()
			return eRevoked
		}
		if unmetered != "" && isUnmetered(unmetered, rec.UserEmail) {
			m.outcome[outUnmetered].Inc()
			c.Status(fiber.StatusOK)
			return nil
		}

		t := now()
		reset := int64(wire.NextMonth(t).Sub(t) / time.Second)
		if reset < 1 {
			reset = 1
		}
		used, allowed := int64(0), false
		if rec.MonthlyLimit > 0 {
			used, allowed, err = store.Count(ctx, wire.CounterKey(t, rec.UserEmail), rec.MonthlyLimit)
			if err != nil {
				m.outcome[outError].Inc()
				return err
			}
		}
		h := &c.Response().Header
		var num [20]byte
		h.SetBytesV("RateLimit-Limit", strconv.AppendInt(num[:0], max(rec.MonthlyLimit, 0), 10))
		h.SetBytesV("RateLimit-Reset", strconv.AppendInt(num[:0], reset, 10))
		if !allowed {
			m.outcome[outOverQuota].Inc()
			h.SetBytesV("RateLimit-Remaining", []byte{'0'})
			h.SetBytesV(fiber.HeaderRetryAfter, strconv.AppendInt(num[:0], reset, 10))
			return eQuota
		}
		h.SetBytesV("RateLimit-Remaining", strconv.AppendInt(num[:0], rec.MonthlyLimit-used, 10))
		m.outcome[outAllowed].Inc()
		c.Status(fiber.StatusOK) // and no body
		return nil
	}
}

// isUnmetered matches email, case-insensitively, against the lower-case
// pattern.
func isUnmetered(pattern, email string) bool {
	ok, _ := path.Match(pattern, strings.ToLower(email))
	return ok
}

// Decision outcomes, the label values of pesto_auth_decisions_total.
const (
	outAllowed = iota
	outUnmetered
	outNoToken
	outMalformed
	outNotRegistered
	outRevoked
	outOverQuota
	outError
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"allowed", "unmetered", "no_token", "malformed", "not_registered", "revoked", "over_quota", "error"}

type authMetrics struct {
	outcome     [numOutcomes]*metrics.Counter
	cacheHits   *metrics.Counter
	cacheMisses *metrics.Counter
	redisErrors *metrics.Counter
	faults      *metrics.Counter
}

func newAuthMetrics(reg *metrics.Registry) *authMetrics {
	m := &authMetrics{
		cacheHits:   reg.Counter("pesto_auth_token_cache_total", "Token record lookups by client-side cache result.", "result", "hit"),
		cacheMisses: reg.Counter("pesto_auth_token_cache_total", "Token record lookups by client-side cache result.", "result", "miss"),
		redisErrors: reg.Counter("pesto_redis_errors_total", "Requests answered 500 because Redis was unreachable or timed out."),
		faults:      reg.Counter("pesto_internal_errors_total", "Requests answered 500 for any other fault (corrupt record, error reply)."),
	}
	for i, name := range outcomeNames {
		m.outcome[i] = reg.Counter("pesto_auth_decisions_total", "Auth decisions by outcome.", "outcome", name)
	}
	return m
}

// counterScript counts up to n calls atomically, so that a limit of N allows
// exactly N calls whatever the number of racing callers and replicas. The
// TTL is set when the counter is created, never pushed forward. It returns
// {calls counted before, calls counted now}: the second is min(n, limit -
// before), or 0 (and nothing is written) when the limit is reached.
var counterScript = rueidis.NewLuaScript(`
local counter_key = KEYS[1]
local limit = tonumber(ARGV[1])
local ttl_seconds = ARGV[2]
local n = tonumber(ARGV[3])
local used = tonumber(redis.call('GET', counter_key) or '0')
local granted = math.min(n, limit - used)
if granted <= 0 then return {used, 0} end
local after = redis.call('INCRBY', counter_key, granted)
if after == granted then redis.call('EXPIRE', counter_key, ttl_seconds) end
return {after - granted, granted}
`)

var counterTTL = strconv.FormatInt(int64(wire.CounterTTL/time.Second), 10)

func (s *redisStore) countN(ctx context.Context, key string, limit, n int64) (before, granted int64, err error) {
	c, err := s.conn.Client()
	if err != nil {
		return 0, 0, err
	}
	reply, err := counterScript.Exec(ctx, c, []string{key},
		[]string{strconv.FormatInt(limit, 10), counterTTL, strconv.FormatInt(n, 10)}).ToArray()
	if err != nil {
		return 0, 0, err
	}
	if len(reply) != 2 {
		return 0, 0, fmt.Errorf("counter script: %d values", len(reply))
	}
	if before, err = reply[0].AsInt64(); err == nil {
		granted, err = reply[1].AsInt64()
	}
	return before, granted, err
}

// countFunc counts up to n calls against limit on the counter key in one
// atomic Redis step. It returns the calls counted before this step and how
// many of the n it counted: min(n, limit-before), or 0.
type countFunc func(ctx context.Context, key string, limit, n int64) (before, granted int64, err error)

// coalescer is group commit for counters. Calls of one key that arrive
// while a count of that key is on its way to Redis wait together, and are
// counted by the next single script call: a hot key costs Redis one script
// per round trip instead of one per call, and every call still waits for at
// most one round trip of its own. The quota stays exact: each script is
// atomic and grants calls in arrival order.
type coalescer struct {
	count countFunc
	mu    sync.Mutex
	keys  map[counterLimit]*batch // the batch being filled, per key with one on its way
}

// counterLimit identifies a queue: a counter, and the limit its calls carry
// (a record changed meanwhile starts another queue).
type counterLimit struct {
	key   string
	limit int64
}

// batch is the calls of one key counted by one script call.
type batch struct {
	n       int64         // calls in the batch
	turn    chan struct{} // closed when the batch may be sent
	done    chan struct{} // closed when before, granted and err are set (nil when alone)
	next    *batch        // the batch filling behind this one, if any
	before  int64
	granted int64
	err     error
}

func newCoalescer(count countFunc) *coalescer {
	return &coalescer{count: count, keys: map[counterLimit]*batch{}}
}

// Count counts one call against limit on key: it returns the calls counted
// after this one and true, or false when the limit was reached before it.
func (c *coalescer) Count(ctx context.Context, key string, limit int64) (int64, bool, error) {
	k := counterLimit{key, limit}
	c.mu.Lock()
	head, busy := c.keys[k]
	if !busy {
		// Nothing on its way for this key: count at once, alone. (Calls that
		// come meanwhile join the next batch, so no one waits on this one.)
		b := &batch{n: 1}
		c.keys[k] = b
		c.mu.Unlock()
		c.send(ctx, k, b)
		return b.result(0)
	}
	b := head.next
	if b == nil {
		b = &batch{turn: make(chan struct{}), done: make(chan struct{})}
		head.next = b
	}
	i := b.n
	b.n++
	c.mu.Unlock()

	if i == 0 {
		// The first call of a batch sends it when the one ahead is back.
		<-b.turn
		c.send(ctx, k, b)
		return b.result(0)
	}
	select {
	case <-b.done:
		return b.result(i)
	case <-ctx.Done():
		return 0, false, ctx.Err()
	}
}

// send counts b, then lets the batch behind it go, or retires the key.
func (c *coalescer) send(ctx context.Context, k counterLimit, b *batch) {
	c.mu.Lock()
	n := b.n // no call joins b from here on: it is no longer head.next
	c.mu.Unlock()
	b.before, b.granted, b.err = c.count(ctx, k.key, k.limit, n)
	if b.done != nil {
		close(b.done)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if b.next == nil {
		delete(c.keys, k)
		return
	}
	c.keys[k] = b.next
	close(b.next.turn)
}

// result is the answer of the i-th call of the batch.
func (b *batch) result(i int64) (int64, bool, error) {
	if b.err != nil {
		return 0, false, b.err
	}
	if i >= b.granted {
		return 0, false, nil
	}
	return b.before + i + 1, true, nil
}
