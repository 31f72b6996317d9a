// Package outbox delivers the emails queued in Redis (SPEC §3 "Outbox,
// nothing lost"): key emails (approve, rotate) and auth's quota warnings,
// from one stream shared by every registration process, through a Sender
// (the Mailer: SMTP), with retries, reclaims and a dead-letter stream.
package outbox

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"pesto/shared/logging"
	"pesto/shared/metrics"
	"pesto/shared/redisconn"
	"pesto/shared/wire"
)

// The outbox's keys. The {waiting-list} hash tag puts them in the same
// Redis Cluster slot as the waiting list, so that approve can remove a
// signup and queue its email in one atomic script, in a cluster too.
const (
	// Stream is the stream of emails: wire.KeyEmail and wire.QuotaWarning
	// entries.
	Stream = wire.OutboxStream
	// Dead holds the entries that ran out of attempts.
	Dead = "pesto:{waiting-list}:outbox:dead"
	// Group is the consumer group of every registration process.
	Group = "mailers"
	// Attempts is a hash: stream entry ID -> SMTP attempts the server
	// refused so far. It lives beside the stream (same hash tag, same
	// cluster slot) so that one script can drop an entry and its count
	// together, and any worker that reclaims an entry continues its count.
	Attempts = "pesto:{waiting-list}:outbox:attempts"
)

// Sender sends one outbox entry. Its errors say what the worker does
// next: nil, the server took it; a *RejectedError, the server refused it
// (an attempt counted, retried later); an *InvalidEmailError, it cannot be
// sent at all (dead letter at once); any other error, no server could take
// it (the worker pauses and retries it without counting an attempt).
type Sender interface {
	Send(ctx context.Context, e wire.OutboxEntry) error
}

// SenderFunc is a function that is a Sender.
type SenderFunc func(ctx context.Context, e wire.OutboxEntry) error

// Send calls f.
func (f SenderFunc) Send(ctx context.Context, e wire.OutboxEntry) error { return f(ctx, e) }

// Defaults of the outbox's tunables.
const (
	defaultMinIdle      = 2 * time.Minute
	defaultBlock        = 5 * time.Second
	defaultRetryMin     = 500 * time.Millisecond
	defaultRetryMax     = time.Minute
	defaultRedisTimeout = 2 * time.Second
	defaultSendTimeout  = time.Minute
	redisRetryMin       = 50 * time.Millisecond
	redisRetryMax       = 5 * time.Second
	reclaimCount        = 10
)

// Worker delivers the queued emails (SPEC §3 "Outbox, nothing lost").
//
// Each registration process runs one outbox worker, a consumer of the group
// Group on Stream. An entry is read by one consumer only, sent,
// then acknowledged and deleted from the stream in one step, so each email
// goes out once however many workers run. A worker that dies with an entry
// in hand leaves it pending; after MinIdle another worker claims it.
//
// When the SMTP server cannot be reached (connection refused, TLS or AUTH
// failure, timeout) the worker pauses with a growing backoff and retries
// the same entry without counting an attempt: an outage of any length
// loses nothing. When the server answers with a 4xx/5xx refusal, the
// attempt is counted in Attempts and the entry is retried later with
// its own backoff, while other entries go on; after maxAttempts it moves to
// Dead, with the last error, in the same step that removes it.
type Worker struct {
	conn        *redisconn.Conn
	send        Sender
	log         *slog.Logger
	maxAttempts int
	consumer    string

	// MinIdle is how long an entry must sit unacknowledged in another
	// consumer's hands before this worker takes it over. It must exceed
	// the longest send (SendTimeout and the SMTP timeouts); the worker
	// refreshes the entries it keeps for a retry before each attempt.
	MinIdle time.Duration
	// Block is how long one XREADGROUP waits for a new entry.
	Block time.Duration
	// RetryMin and RetryMax bound the exponential backoff after a failure
	// (refused email, unreachable SMTP server).
	RetryMin, RetryMax time.Duration
	// RedisTimeout is the deadline of each Redis call (Block plus this for
	// XREADGROUP).
	RedisTimeout time.Duration
	// SendTimeout bounds the context of one send.
	SendTimeout time.Duration

	sent, rejected, unreachable, dead *metrics.Counter
	depth                             atomic.Int64

	// State of the worker; only Run's goroutine touches it.
	retries       map[string]*queuedEmail // entries held for a retry, by ID
	unacked       []string                // sent, acknowledgement not yet stored
	started       bool                    // own pending entries loaded
	groupReady    bool
	smtpPause     time.Duration // backoff while the SMTP server is unreachable
	smtpResume    time.Time
	nextReclaim   time.Time
	reclaimCursor string
}

// queuedEmail is one stream entry in the worker's hands.
type queuedEmail struct {
	id     string
	raw    map[string]string
	entry  wire.OutboxEntry
	valid  bool
	due    time.Time
	lastEr string
}

// New returns the outbox worker of this process; consumer names it in
// the consumer group (unique per process). send is nil when SMTP_URL is
// empty: emails then wait in the stream.
func New(conn *redisconn.Conn, send Sender, log *slog.Logger, reg *metrics.Registry, maxAttempts int, consumer string) *Worker {
	o := &Worker{
		conn:         conn,
		send:         send,
		log:          log.With("component", "outbox", "consumer", consumer),
		maxAttempts:  max(maxAttempts, 1),
		consumer:     consumer,
		MinIdle:      defaultMinIdle,
		Block:        defaultBlock,
		RetryMin:     defaultRetryMin,
		RetryMax:     defaultRetryMax,
		RedisTimeout: defaultRedisTimeout,
		SendTimeout:  defaultSendTimeout,
		sent:         reg.Counter("pesto_emails_sent_total", "Key emails the SMTP server accepted."),
		rejected:     reg.Counter("pesto_emails_failed_total", "Key email sends that failed.", "reason", "rejected"),
		unreachable:  reg.Counter("pesto_emails_failed_total", "Key email sends that failed.", "reason", "unreachable"),
		dead:         reg.Counter("pesto_emails_dead_total", "Key emails moved to the dead-letter stream after their last attempt."),
		retries:      map[string]*queuedEmail{},
	}
	reg.Gauge("pesto_outbox_depth", "Key emails waiting in the outbox stream (as last seen by the worker).",
		func() float64 { return float64(o.depth.Load()) })
	return o
}

// Run delivers emails until ctx is done, then returns once the email being
// sent (if any) is finished or abandoned to another consumer.
func (o *Worker) Run(ctx context.Context) error {
	if o.send == nil {
		o.log.Warn("SMTP_URL is empty: key emails wait in the outbox until it is set")
	}
	var redisWait time.Duration
	for ctx.Err() == nil {
		err := o.step(ctx)
		switch {
		case err == nil:
			if redisWait > 0 {
				o.log.Info("outbox: redis is back")
			}
			redisWait = 0
			continue
		case ctx.Err() != nil:
			return nil
		case isNoGroup(err):
			// The stream or the group vanished (a Redis restart without
			// persistence, a FLUSHALL): make them again, then go on.
			o.groupReady = false
		}
		if redisWait == 0 {
			o.log.Warn("outbox: redis call failed, retrying", "err", err.Error())
		} else {
			o.log.Debug("outbox: redis call failed, retrying", "err", err.Error())
		}
		redisWait = backoff(redisWait, redisRetryMin, max(min(o.RetryMax, redisRetryMax), redisRetryMin))
		sleep(ctx, redisWait)
	}
	return nil
}

// step does one unit of work: store owed acknowledgements, retry one
// entry, reclaim abandoned entries, or wait for a new one.
func (o *Worker) step(ctx context.Context) error {
	c, err := o.conn.Client()
	if err != nil {
		return err
	}
	if !o.groupReady {
		if err := o.createGroup(ctx, c); err != nil {
			return err
		}
		o.groupReady = true
	}
	if err := o.refreshDepth(ctx, c); err != nil {
		return err
	}
	if o.send == nil {
		// Nothing to send with: only keep the depth gauge current.
		sleep(ctx, min(o.Block, time.Second))
		return nil
	}
	if !o.started {
		// Entries this consumer name read in an earlier life and never
		// finished: retry them now rather than after MinIdle.
		entries, err := o.read(ctx, c, "0", 0)
		if err != nil {
			return err
		}
		o.hold(entries, time.Now())
		o.started = true
	}
	if err := o.flushAcks(ctx, c); err != nil {
		return err
	}
	now := time.Now()
	if now.Before(o.smtpResume) {
		sleep(ctx, o.smtpResume.Sub(now))
		return nil
	}
	if q := o.nextDue(now); q != nil {
		return o.retry(ctx, c, q)
	}
	if !now.Before(o.nextReclaim) {
		o.nextReclaim = now.Add(max(o.MinIdle/2, 10*time.Millisecond))
		n, err := o.reclaim(ctx, c, now)
		if err != nil || n > 0 {
			return err
		}
	}
	wait := min(o.Block, o.nextReclaim.Sub(now))
	if q := o.nextQueued(); q != nil {
		wait = min(wait, q.due.Sub(now))
	}
	if wait < time.Millisecond {
		return nil
	}
	entries, err := o.read(ctx, c, ">", wait)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := o.deliver(ctx, c, o.queued(e)); err != nil {
			return err
		}
	}
	return nil
}

func (o *Worker) createGroup(ctx context.Context, c rueidis.Client) error {
	ctx, cancel := context.WithTimeout(ctx, o.RedisTimeout)
	defer cancel()
	// From ID 0: entries queued before any worker made the group are
	// delivered too.
	err := c.Do(ctx, c.B().XgroupCreate().Key(Stream).Group(Group).Id("0").Mkstream().Build()).Error()
	if re, ok := rueidis.IsRedisErr(err); ok && re.IsBusyGroup() {
		return nil
	}
	return err
}

func (o *Worker) refreshDepth(ctx context.Context, c rueidis.Client) error {
	ctx, cancel := context.WithTimeout(ctx, o.RedisTimeout)
	defer cancel()
	n, err := c.Do(ctx, c.B().Xlen().Key(Stream).Build()).AsInt64()
	if err != nil {
		return err
	}
	o.depth.Store(n)
	return nil
}

// read reads entries of the group: id ">" one new entry, waiting up to
// block; id "0" this consumer's own pending entries.
func (o *Worker) read(ctx context.Context, c rueidis.Client, id string, block time.Duration) ([]rueidis.XRangeEntry, error) {
	var cmd rueidis.Completed
	if id == ">" {
		cmd = c.B().Xreadgroup().Group(Group, o.consumer).Count(1).Block(max(block.Milliseconds(), 1)).
			Streams().Key(Stream).Id(id).Build().UnblockOnCancel() // Run's end interrupts the wait
	} else {
		cmd = c.B().Xreadgroup().Group(Group, o.consumer).Count(100).Streams().Key(Stream).Id(id).Build()
	}
	// The blocking read must end before its deadline, or a dead Redis and
	// an empty stream would look alike.
	ctx, cancel := context.WithTimeout(ctx, block+o.RedisTimeout)
	defer cancel()
	streams, err := c.Do(ctx, cmd).AsXRead()
	if rueidis.IsRedisNil(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return streams[Stream], nil
}

// reclaim takes over entries that sat idle in another consumer's hands for
// MinIdle (their worker died) and holds them for a retry now.
func (o *Worker) reclaim(ctx context.Context, c rueidis.Client, now time.Time) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, o.RedisTimeout)
	defer cancel()
	start := o.reclaimCursor
	if start == "" {
		start = "0-0"
	}
	res, err := c.Do(ctx, c.B().Xautoclaim().Key(Stream).Group(Group).Consumer(o.consumer).
		MinIdleTime(strconv.FormatInt(o.MinIdle.Milliseconds(), 10)).Start(start).Count(reclaimCount).Build()).ToArray()
	if err != nil {
		return 0, err
	}
	if len(res) < 2 {
		return 0, errors.New("outbox: short XAUTOCLAIM reply")
	}
	o.reclaimCursor, _ = res[0].ToString()
	entries, err := res[1].AsXRange()
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		o.log.Info("outbox: reclaimed an abandoned email", "id", e.ID)
	}
	o.hold(entries, now)
	return len(entries), nil
}

// hold keeps entries for a retry at now. An entry deleted from the stream
// while pending (no fields) only needs its acknowledgement.
func (o *Worker) hold(entries []rueidis.XRangeEntry, now time.Time) {
	for _, e := range entries {
		if e.FieldValues == nil {
			o.unacked = append(o.unacked, e.ID)
			continue
		}
		q := o.queued(e)
		q.due = now
		o.retries[q.id] = q
	}
}

// about is what the logs say of q: a key email's recipient and key (as
// logging.Token shows keys), a warning's recipient and threshold.
func (q *queuedEmail) about() []any {
	switch {
	case q.entry.Key != nil:
		return []any{"kind", wire.KindKey, "to", q.entry.Key.To, "token", logging.Token(q.entry.Key.Token)}
	case q.entry.Warning != nil:
		return []any{"kind", wire.KindQuotaWarning, "to", q.entry.Warning.To, "percent", q.entry.Warning.Percent}
	}
	return []any{"kind", q.raw["kind"]}
}

// to is the recipient of a valid entry.
func (q *queuedEmail) to() string {
	switch {
	case q.entry.Key != nil:
		return q.entry.Key.To
	case q.entry.Warning != nil:
		return q.entry.Warning.To
	}
	return ""
}

func (o *Worker) queued(e rueidis.XRangeEntry) *queuedEmail {
	entry, ok := wire.ParseOutboxEntry(e.FieldValues)
	return &queuedEmail{id: e.ID, raw: e.FieldValues, entry: entry, valid: ok}
}

// nextQueued returns the held entry due first, or nil.
func (o *Worker) nextQueued() *queuedEmail {
	var first *queuedEmail
	for _, q := range o.retries {
		if first == nil || q.due.Before(first.due) || (q.due.Equal(first.due) && q.id < first.id) {
			first = q
		}
	}
	return first
}

// nextDue returns a held entry due at now, or nil.
func (o *Worker) nextDue(now time.Time) *queuedEmail {
	if q := o.nextQueued(); q != nil && !q.due.After(now) {
		return q
	}
	return nil
}

// touchScript makes sure the entry is still this consumer's, and resets its
// idle time so that no other worker reclaims it during the attempt.
// Returns 1 when it is ours, 0 when it was finished or reclaimed meanwhile.
var touchScript = rueidis.NewLuaScript(`
local stream = KEYS[1]
local group, id, consumer = ARGV[1], ARGV[2], ARGV[3]
local p = redis.call('XPENDING', stream, group, id, id, 1)
if #p == 0 or p[1][2] ~= consumer then return 0 end
redis.call('XCLAIM', stream, group, consumer, 0, id, 'JUSTID')
return 1
`)

// retry attempts a held entry again, if it is still ours.
func (o *Worker) retry(ctx context.Context, c rueidis.Client, q *queuedEmail) error {
	rctx, cancel := context.WithTimeout(ctx, o.RedisTimeout)
	mine, err := touchScript.Exec(rctx, c, []string{Stream}, []string{Group, q.id, o.consumer}).AsInt64()
	cancel()
	if err != nil {
		return err
	}
	if mine == 0 {
		delete(o.retries, q.id)
		return nil
	}
	return o.deliver(ctx, c, q)
}

// deliver sends one entry and records the outcome. Once the send has
// begun, its outcome is recorded even when ctx ends meanwhile.
func (o *Worker) deliver(ctx context.Context, c rueidis.Client, q *queuedEmail) error {
	if !q.valid {
		return o.deadLetter(ctx, c, q, 0, "malformed outbox entry: want to, name, token and an integer limit, or a quota warning's kind, to, percent, used, limit and month")
	}
	if wire.IsTrialEmail(q.to()) {
		// A trial key's made-up address: no one reads it, so nothing is
		// sent there (auth queues no warning for it; an older auth, or an
		// admin's rotation of a trial key, may have queued one). Dropped,
		// not dead-lettered: there is nothing to replay.
		delete(o.retries, q.id)
		o.unacked = append(o.unacked, q.id)
		o.log.Info("email to a made-up address dropped", append([]any{"id", q.id}, q.about()...)...)
		return o.flushAcks(ctx, c)
	}
	sendCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.SendTimeout)
	err := o.send.Send(sendCtx, q.entry)
	cancel()
	now := time.Now()
	var rejected *RejectedError
	var invalid *InvalidEmailError
	switch {
	case err == nil:
		o.sent.Inc()
		o.smtpPause = 0
		delete(o.retries, q.id)
		o.unacked = append(o.unacked, q.id)
		o.log.Info("email sent", append([]any{"id", q.id}, q.about()...)...)
		return o.flushAcks(ctx, c)
	case errors.As(err, &invalid):
		return o.deadLetter(ctx, c, q, 0, err.Error())
	case errors.As(err, &rejected):
		o.rejected.Inc()
		o.smtpPause = 0
		q.lastEr = err.Error()
		o.retries[q.id] = q
		q.due = now.Add(o.RetryMin) // if the count below cannot be stored
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.RedisTimeout)
		n, err := c.Do(rctx, c.B().Hincrby().Key(Attempts).Field(q.id).Increment(1).Build()).AsInt64()
		cancel()
		if err != nil {
			return err
		}
		if n >= int64(o.maxAttempts) {
			return o.deadLetter(ctx, c, q, n, q.lastEr)
		}
		q.due = now.Add(backoffN(n, o.RetryMin, o.RetryMax))
		o.log.Warn("SMTP server refused an email, will retry", append(append([]any{"id", q.id}, q.about()...),
			"attempt", n, "max_attempts", o.maxAttempts, "retry_in", q.due.Sub(now).String(), "err", q.lastEr)...)
		return nil
	default:
		// Not reached, or no answer: no attempt is counted, and the whole
		// worker pauses, since every other email would fail the same way.
		o.unreachable.Inc()
		o.smtpPause = backoff(o.smtpPause, o.RetryMin, o.RetryMax)
		o.smtpResume = now.Add(o.smtpPause)
		q.due = now
		o.retries[q.id] = q
		o.log.Warn("SMTP server unreachable, pausing the outbox", "id", q.id, "retry_in", o.smtpPause.String(), "err", err.Error())
		return nil
	}
}

// ackScript acknowledges and deletes an entry, and drops its attempt count.
var ackScript = rueidis.NewLuaScript(`
local stream, attempts = KEYS[1], KEYS[2]
local group, id = ARGV[1], ARGV[2]
local n = redis.call('XACK', stream, group, id)
redis.call('XDEL', stream, id)
redis.call('HDEL', attempts, id)
return n
`)

// flushAcks stores the acknowledgements of sent entries. They are kept in
// memory until Redis takes them, so that a sent email is never sent again
// by this worker.
func (o *Worker) flushAcks(ctx context.Context, c rueidis.Client) error {
	for len(o.unacked) > 0 {
		id := o.unacked[0]
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.RedisTimeout)
		err := ackScript.Exec(rctx, c, []string{Stream, Attempts}, []string{Group, id}).Error()
		cancel()
		if err != nil {
			return err
		}
		o.unacked = o.unacked[1:]
	}
	return nil
}

// deadScript moves an entry to the dead-letter stream: acknowledged,
// deleted, its count dropped and its copy added, in one step. It does
// nothing when the entry is no longer pending (another worker finished it).
var deadScript = rueidis.NewLuaScript(`
local stream, attempts, dead = KEYS[1], KEYS[2], KEYS[3]
local group, id = ARGV[1], ARGV[2]
-- ARGV[3] onwards: the dead entry's field/value pairs
if redis.call('XACK', stream, group, id) == 0 then return 0 end
redis.call('XDEL', stream, id)
redis.call('HDEL', attempts, id)
redis.call('XADD', dead, '*', unpack(ARGV, 3))
return 1
`)

// deadLetter moves q to Dead with the last error and the attempts.
func (o *Worker) deadLetter(ctx context.Context, c rueidis.Client, q *queuedEmail, attempts int64, lastErr string) error {
	args := []string{Group, q.id}
	if q.valid {
		args = append(args, entryFields(q.entry)...)
	} else {
		keys := make([]string, 0, len(q.raw))
		for k := range q.raw {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			args = append(args, k, q.raw[k])
		}
	}
	args = append(args, "id", q.id, "attempts", strconv.FormatInt(attempts, 10), "error", lastErr,
		"failed_at", time.Now().UTC().Format(time.RFC3339))
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.RedisTimeout)
	moved, err := deadScript.Exec(rctx, c, []string{Stream, Attempts, Dead}, args).AsInt64()
	cancel()
	if err != nil {
		return err
	}
	delete(o.retries, q.id)
	if moved == 1 {
		o.dead.Inc()
		o.log.Error("email moved to the dead-letter stream", append(append([]any{"id", q.id}, q.about()...),
			"attempts", attempts, "err", lastErr, "stream", Dead)...)
	}
	return nil
}

// isNoGroup reports whether err says the stream or its group is missing.
func isNoGroup(err error) bool {
	re, ok := rueidis.IsRedisErr(err)
	return ok && strings.Contains(re.Error(), "NOGROUP")
}

// backoff returns the wait after prev: lo at first, then doubling up to hi.
func backoff(prev, lo, hi time.Duration) time.Duration {
	lo = max(lo, time.Millisecond) // never a busy loop
	if prev < lo {
		return lo
	}
	return min(prev*2, hi)
}

// backoffN returns the wait after the nth failure: lo·2^(n-1), at most hi.
func backoffN(n int64, lo, hi time.Duration) time.Duration {
	d := lo
	for i := int64(1); i < n && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
