package main

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v3"
	"github.com/redis/rueidis"

	"pesto/shared/apikey"
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
func handleDecide(store tokenStore, unmetered string, now func() time.Time, m *authMetrics, warn *warnings) fiber.Handler {
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
		case errors.Is(err, apikey.ErrNotFound):
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
		reset, window := monthOf(t)
		used, allowed := int64(0), false
		if rec.MonthlyLimit > 0 {
			used, allowed, err = store.Count(ctx, wire.CounterKey(t, rec.UserEmail), rec.MonthlyLimit)
			if err != nil {
				m.outcome[outError].Inc()
				return err
			}
		}
		q := quotaState{limit: max(rec.MonthlyLimit, 0), reset: reset, window: window}
		if !allowed {
			m.outcome[outOverQuota].Inc()
			setRateHeaders(&c.Response().Header, q)
			var num [20]byte
			c.Response().Header.SetBytesV(fiber.HeaderRetryAfter, strconv.AppendInt(num[:0], reset, 10))
			return eQuota
		}
		q.remaining = rec.MonthlyLimit - used
		setRateHeaders(&c.Response().Header, q)
		warn.after(rec.UserEmail, rec.MonthlyLimit, used, t) // a comparison, unless this call crosses a threshold
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

// The quota path after the decision: calls are counted by group commit
// (quota.Count); each batch goes to Redis in one round trip, where a
// counter is counted in one atomic step: a plain INCRBY while this replica
// last saw it well below its limit (plainCount), counterScript otherwise.
//
// A call is counted if and only if it is answered 200 (SPEC §2), whatever
// the timing. The script is told a deadline and grants nothing once Redis's
// clock has passed it; the caller waits for the reply until countGrace
// after that deadline (the reply's way back, and the clocks of auth and
// Redis a little apart), so a grant normally reaches its caller in time.
// Whatever a reply that comes later still counted for calls answered 500
// meanwhile is refunded exactly (refundScript): the batch waits for its
// reply for as long as the counting connection lives, and that connection
// is not given up while Redis is alive, however long it stalls
// (counterOptions). A script held up in a stalled Redis runs after its
// deadline when Redis resumes and counts nothing; a plain INCRBY counts,
// and its reply brings the refund.
const countGrace = 150 * time.Millisecond

// counterScript counts batches of calls, many counters in one call. Per
// counter it grants min(n, limit - used) calls, or none (and writes
// nothing) when the limit is reached, so that a limit of N allows exactly N
// calls whatever the number of racing callers and replicas. The TTL is set
// when the counter is created, never pushed forward; the value stays the
// decimal count the old services read. Past the deadline (Unix
// microseconds by Redis's clock; 0: none) it counts nothing and returns an
// empty array; otherwise {used before, granted} for each counter, in order.
var counterScript = rueidis.NewLuaScript(`
local deadline_us = tonumber(ARGV[1])
local ttl_seconds = ARGV[2]
local now = redis.call('TIME')
if deadline_us > 0 and tonumber(now[1]) * 1000000 + tonumber(now[2]) > deadline_us then
  return {}
end
-- Every counter read in one MGET (in chunks: unpack has a stack limit).
local counters = {}
for first = 1, #KEYS, 200 do
  local values = redis.call('MGET', unpack(KEYS, first, math.min(first + 199, #KEYS)))
  for j, v in ipairs(values) do counters[first + j - 1] = v end
end
local reply = {}
local added = {} -- calls counted by this script so far, per counter
for i, counter_key in ipairs(KEYS) do
  local limit = tonumber(ARGV[1 + 2 * i])
  local n = tonumber(ARGV[2 + 2 * i])
  local used = tonumber(counters[i] or '0') + (added[counter_key] or 0)
  local granted = math.min(n, limit - used)
  if granted > 0 then
    local after = redis.call('INCRBY', counter_key, granted)
    if after == granted then redis.call('EXPIRE', counter_key, ttl_seconds) end
    added[counter_key] = (added[counter_key] or 0) + granted
  else
    granted = 0
  end
  reply[2 * i - 1] = used
  reply[2 * i] = granted
end
return reply
`)

// refundScript takes back calls that were counted but not answered 200 (a
// reply that came after its callers gave up). A counter gone meanwhile
// (expired, deleted) is left alone.
var refundScript = rueidis.NewLuaScript(`
local counter_key = KEYS[1]
local calls = ARGV[1]
if redis.call('EXISTS', counter_key) == 0 then return 0 end
return redis.call('DECRBY', counter_key, calls)
`)

var counterTTL = strconv.FormatInt(int64(wire.CounterTTL/time.Second), 10)

// errLate: the counter script ran after its deadline and counted nothing.
var errLate = fmt.Errorf("counter script ran past its deadline: %w", context.DeadlineExceeded)

// countBatch counts the entries of one batch, which share a hash slot, and
// sets their before and granted (or their err). A counter this replica saw
// well below its limit (plainCount) is counted with a plain INCRBY, the
// others by counterScript; both go out together, in one round trip.
func (s *redisStore) countBatch(ctx context.Context, deadline time.Time, entries []entry) error {
	c, err := s.counters.Client()
	if err != nil {
		return err
	}
	plain := make([]int, 0, len(entries))
	checked := make([]int, 0, len(entries))
	names := make([]uint64, len(entries)) // each counter's name in seen, hashed once
	for i := range entries {
		names[i] = s.seenHash(entries[i].key)
	}
	s.seenMu.Lock()
	for i, e := range entries {
		if used, ok := s.seen[names[i]]; ok && plainCount(used, e.n, e.limit) {
			plain = append(plain, i)
		} else {
			checked = append(checked, i)
		}
	}
	s.seenMu.Unlock()

	var scriptErr error
	switch {
	case len(plain) == 0:
		scriptErr = s.countChecked(ctx, c, deadline, entries, checked)
	case len(checked) == 0:
		s.countPlain(ctx, c, entries, plain)
	default: // both at once: one round trip
		done := make(chan struct{})
		go func() {
			scriptErr = s.countChecked(ctx, c, deadline, entries, checked)
			close(done)
		}()
		s.countPlain(ctx, c, entries, plain)
		<-done
	}
	if scriptErr != nil {
		for _, i := range checked {
			entries[i].err = scriptErr
		}
	}

	s.seenMu.Lock()
	if len(s.seen) >= seenMax {
		clear(s.seen) // a month's worth of counters at most; they are read again
	}
	for i := range entries {
		if e := &entries[i]; e.err == nil {
			s.seen[names[i]] = e.before + e.granted
		}
	}
	s.seenMu.Unlock()
	return nil
}

// seenMax bounds the counters a replica remembers (about 40 bytes each).
const seenMax = 1 << 16

// seenHash names a counter in seen: 8 bytes instead of the key's ~60 (and
// no key kept alive). Two counters whose names collide (among seenMax of
// them, a chance of about 1 in 10^10) at worst share a last-seen value, and
// plainCount then may count the one near its limit with a plain INCRBY:
// still exact (the excess is given back at once), only not write-free for
// a refused call.
func (s *redisStore) seenHash(key string) uint64 { return maphash.String(s.seenSeed, key) }

// plainCount reports whether n calls on a counter last seen at used may be
// counted with a plain INCRBY: when even with the other replicas' calls
// since then (up to an eighth of the limit) they stay within it. A plain
// INCRBY that does pass the limit is still exact: countPlain gives the
// excess back at once, and the counter is seen at its limit from then on,
// so it is checked by the script, which writes nothing for a refused call.
func plainCount(used, n, limit int64) bool {
	return used+n <= limit-limit/8
}

// countChecked counts the entries at idx with counterScript.
func (s *redisStore) countChecked(ctx context.Context, c rueidis.Client, deadline time.Time, entries []entry, idx []int) error {
	keys := make([]string, len(idx))
	args := make([]string, 2, 2+2*len(idx))
	args[0], args[1] = "0", counterTTL
	if !deadline.IsZero() {
		args[0] = strconv.FormatInt(deadline.UnixMicro(), 10)
	}
	for j, i := range idx {
		keys[j] = entries[i].key
		args = append(args, strconv.FormatInt(entries[i].limit, 10), strconv.FormatInt(entries[i].n, 10))
	}
	reply, err := counterScript.Exec(ctx, c, keys, args).ToArray()
	if err != nil {
		return err
	}
	if len(reply) == 0 {
		return errLate
	}
	if len(reply) != 2*len(idx) {
		return fmt.Errorf("counter script: %d values for %d counters", len(reply), len(idx))
	}
	for j, i := range idx {
		if entries[i].before, err = reply[2*j].AsInt64(); err != nil {
			return err
		}
		if entries[i].granted, err = reply[2*j+1].AsInt64(); err != nil {
			return err
		}
	}
	return nil
}

// countPlain counts the entries at idx with one INCRBY each. INCRBY's
// answer says what it counted: the calls that fit under the limit are
// granted, the excess is given back at once (a counter that passed its
// limit since this replica last saw it). A counter INCRBY had to create (an
// operator deleted it) gets its TTL right after.
func (s *redisStore) countPlain(ctx context.Context, c rueidis.Client, entries []entry, idx []int) {
	cmds := make(rueidis.Commands, len(idx))
	for j, i := range idx {
		cmds[j] = c.B().Incrby().Key(entries[i].key).Increment(entries[i].n).Build()
	}
	for j, res := range c.DoMulti(ctx, cmds...) {
		e := &entries[idx[j]]
		after, err := res.AsInt64()
		if err != nil {
			e.err = err
			continue
		}
		e.before = after - e.n
		e.granted = min(e.n, max(e.limit-e.before, 0))
		if excess := e.n - e.granted; excess > 0 {
			if err := s.refund(ctx, e.key, excess); err != nil && s.onLost != nil {
				s.onLost(e.key, excess, err)
			}
		}
		if after == e.n {
			if err := expireScript.Exec(ctx, c, []string{e.key}, []string{counterTTL}).Error(); err != nil {
				s.log.Warn("counter created without its TTL", "err", err.Error())
			}
		}
	}
}

// expireScript gives a counter that has none its TTL (never pushing an
// existing one forward).
var expireScript = rueidis.NewLuaScript(`
local counter_key = KEYS[1]
local ttl_seconds = ARGV[1]
if redis.call('TTL', counter_key) == -1 then
  return redis.call('EXPIRE', counter_key, ttl_seconds)
end
return 0
`)

// refund takes n counted calls back from the counter key.
func (s *redisStore) refund(ctx context.Context, key string, n int64) error {
	c, err := s.counters.Client()
	if err != nil {
		return err
	}
	return refundScript.Exec(ctx, c, []string{key}, []string{strconv.FormatInt(n, 10)}).Error()
}

// groupOf is the queue of a counter key: one for all on a single Redis, one
// per hash slot on a Cluster (a script's keys must share a slot there).
func (s *redisStore) groupOf(key string) uint16 {
	if c, err := s.counters.Client(); err == nil && c.Mode() == rueidis.ClientModeCluster {
		return hashSlot(key)
	}
	return 0
}

// countFunc counts the calls of a batch in one round trip, each counter in
// one atomic step, and sets each entry's before and granted (or its err).
// deadline (zero: none) is the script's: what is counted past it reaches
// its callers too late, and quota refunds it.
type countFunc func(ctx context.Context, deadline time.Time, entries []entry) error

// refundFunc takes n counted calls back from a counter.
type refundFunc func(ctx context.Context, key string, n int64) error

// quota is group commit for counters. Calls that arrive while a batch of
// their queue is on its way to Redis wait together, whatever their keys,
// and are counted by the next single script call: Redis runs one script per
// round trip instead of one per call, for a hot key and for many keys
// alike, and every call waits for at most one round trip besides its own.
// The quota stays exact: each script is atomic and grants calls in arrival
// order.
type quota struct {
	count   countFunc
	refund  refundFunc
	groupOf func(key string) uint16
	onLost  func(key string, n int64, err error) // a refund that failed
	mu      sync.Mutex
	queues  map[uint16]*queue // queues with a batch on its way
}

// queue is the batches of one group: at most one on its way, one filling.
type queue struct {
	next *batch
}

// counterLimit identifies an entry of a batch: a counter, and the limit its
// calls carry (a record changed meanwhile makes another entry).
type counterLimit struct {
	key   string
	limit int64
}

// entry is the calls of one counter and limit in a batch.
type entry struct {
	key     string
	limit   int64
	n       int64 // calls
	before  int64 // set by countFunc: calls counted before these
	granted int64 // set by countFunc: how many of the n it counted
	err     error // set by countFunc: this entry's own fault (nothing counted)
}

// batch is the calls counted by one script call.
type batch struct {
	entries  []entry
	index    map[counterLimit]int // entry of each counter, once there are many
	deadline time.Time            // the earliest of its calls' script deadlines
	done     chan struct{}        // closed when the entries' results or err are set
	answered bool                 // the reply is in (under quota.mu)
	gaveUp   []member             // calls answered 500 before the reply (under quota.mu)
	err      error
}

// member is one call of a batch: the i-th call of entry e.
type member struct{ e, i int }

// batchIndexFrom is the size from which a batch looks its entries up in a
// map rather than by a scan.
const batchIndexFrom = 16

func newQuota(count countFunc, refund refundFunc, groupOf func(string) uint16, onLost func(string, int64, error)) *quota {
	return &quota{count: count, refund: refund, groupOf: groupOf, onLost: onLost, queues: map[uint16]*queue{}}
}

// add joins a call to b and returns its place.
func (b *batch) add(key string, limit int64, deadline time.Time) member {
	if !deadline.IsZero() && (b.deadline.IsZero() || deadline.Before(b.deadline)) {
		b.deadline = deadline
	}
	e := -1
	if b.index != nil {
		if i, ok := b.index[counterLimit{key, limit}]; ok {
			e = i
		}
	} else {
		for i := range b.entries {
			if b.entries[i].key == key && b.entries[i].limit == limit {
				e = i
				break
			}
		}
	}
	if e < 0 {
		e = len(b.entries)
		b.entries = append(b.entries, entry{key: key, limit: limit})
		if b.index != nil {
			b.index[counterLimit{key, limit}] = e
		} else if len(b.entries) == batchIndexFrom {
			b.index = make(map[counterLimit]int, 2*batchIndexFrom)
			for i := range b.entries {
				b.index[counterLimit{b.entries[i].key, b.entries[i].limit}] = i
			}
		}
	}
	m := member{e, int(b.entries[e].n)}
	b.entries[e].n++
	return m
}

// Count counts one call against limit on key: it returns the calls counted
// after this one and true, or false when the limit was reached before it.
// The call is counted only if Count returns true; it gives up, counting
// nothing, when ctx is done (ctx's deadline less countGrace is the
// script's deadline).
func (q *quota) Count(ctx context.Context, key string, limit int64) (int64, bool, error) {
	var deadline time.Time
	if d, ok := ctx.Deadline(); ok {
		deadline = d.Add(-countGrace)
	}
	g := q.groupOf(key)
	q.mu.Lock()
	qu, busy := q.queues[g]
	var b *batch
	if !busy {
		// Nothing on its way in this group: send at once.
		qu = &queue{}
		q.queues[g] = qu
		b = &batch{done: make(chan struct{})}
	} else if b = qu.next; b == nil {
		b = &batch{done: make(chan struct{})}
		qu.next = b
	}
	m := b.add(key, limit, deadline)
	q.mu.Unlock()
	if !busy {
		go q.send(g, qu, b)
	}
	return q.wait(ctx, b, m)
}

// wait is the answer of member m of b, or ctx's error when the reply has not
// come in by then; a grant that comes later is refunded by send.
func (q *quota) wait(ctx context.Context, b *batch, m member) (int64, bool, error) {
	select {
	case <-b.done:
	case <-ctx.Done():
		q.mu.Lock()
		if !b.answered {
			b.gaveUp = append(b.gaveUp, m)
			q.mu.Unlock()
			return 0, false, ctx.Err()
		}
		q.mu.Unlock()
		<-b.done
	}
	if b.err != nil {
		return 0, false, b.err
	}
	e := &b.entries[m.e]
	if e.err != nil {
		return 0, false, e.err
	}
	if int64(m.i) >= e.granted {
		return 0, false, nil
	}
	return e.before + int64(m.i) + 1, true, nil
}

// send counts b and then each batch that filled behind it, until the
// queue is empty.
func (q *quota) send(g uint16, qu *queue, b *batch) {
	for b != nil {
		q.sendOne(b)
		q.mu.Lock()
		b = qu.next
		qu.next = nil
		if b == nil {
			delete(q.queues, g)
		}
		q.mu.Unlock()
	}
}

// lateReply bounds a refund's own round trip.
const lateReply = 2 * time.Second

func (q *quota) sendOne(b *batch) {
	q.mu.Lock()
	entries := b.entries // no call joins b from here on: it is no longer next
	deadline := b.deadline
	q.mu.Unlock()

	if !deadline.IsZero() && !time.Now().Before(deadline) {
		b.err = errLate // its callers are past the script's deadline: send nothing
	} else {
		// No deadline of its own: the reply is awaited for as long as the
		// counting connection lives, so that what it counted for callers
		// who gave up meanwhile can be refunded.
		b.err = q.count(context.Background(), deadline, entries)
	}

	q.mu.Lock()
	b.answered = true
	gaveUp := b.gaveUp
	q.mu.Unlock()
	close(b.done)

	if b.err != nil || len(gaveUp) == 0 {
		return
	}
	refunds := map[int]int64{}
	for _, m := range gaveUp {
		if entries[m.e].err == nil && int64(m.i) < entries[m.e].granted {
			refunds[m.e]++
		}
	}
	for e, n := range refunds {
		ctx, cancel := context.WithTimeout(context.Background(), lateReply)
		if err := q.refund(ctx, entries[e].key, n); err != nil && q.onLost != nil {
			q.onLost(entries[e].key, n, err)
		}
		cancel()
	}
}
