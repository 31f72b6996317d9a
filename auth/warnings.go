package main

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"pesto/shared/metrics"
	"pesto/shared/wire"
)

// threshold is the call that crosses p percent of limit: the first whose
// count is at least limit·p/100, i.e. ⌈limit·p/100⌉, without overflow.
func threshold(limit int64, p int) int64 {
	q, r := limit/100, limit%100
	return q*int64(p) + (r*int64(p)+99)/100
}

// warnings emails a key holder when the calls of their email this month
// cross a threshold of QUOTA_WARNINGS (80 % and 100 % by default).
//
// Exactly once per email, threshold and month, whatever the number of
// replicas and retries: the counter is atomic, so exactly one allowed call
// learns from Count that it is the threshold-th (used == threshold); only
// that call does any more work, queuing the warning and setting a marker
// key in one atomic step that does nothing when the marker is set (a call
// whose count was refunded and made again, a retry). The marker and the
// outbox stream share the {waiting-list} hash tag: one cluster slot. Every
// other call pays a comparison or two.
type warnings struct {
	percents []int // ascending
	queue    func(ctx context.Context, w wire.QuotaWarning) (queued bool, err error)
	log      *slog.Logger
	// results of the crossing calls: queued, already queued, not queued
	queued, duplicate, failed *metrics.Counter
	// tries and the wait before each retry of a failed queuing
	tries   int
	backoff time.Duration
}

// newWarnings returns the warnings of percents, or nil when there are none.
func newWarnings(percents []int, queue func(context.Context, wire.QuotaWarning) (bool, error), log *slog.Logger, reg *metrics.Registry) *warnings {
	if len(percents) == 0 {
		return nil
	}
	const help = "Quota warnings by result, on the calls that crossed a threshold."
	return &warnings{
		percents:  percents,
		queue:     queue,
		log:       log,
		queued:    reg.Counter("pesto_quota_warnings_total", help, "result", "queued"),
		duplicate: reg.Counter("pesto_quota_warnings_total", help, "result", "duplicate"),
		failed:    reg.Counter("pesto_quota_warnings_total", help, "result", "failed"),
		tries:     3,
		backoff:   200 * time.Millisecond,
	}
}

// crossed returns the highest threshold that the used-th call of a month
// with limit crosses, or 0. (Thresholds that fall on the same call, as 80 %
// and 100 % of a limit of 1, send only the highest.)
func (w *warnings) crossed(limit, used int64) int {
	for i := len(w.percents) - 1; i >= 0; i-- {
		if used == threshold(limit, w.percents[i]) {
			return w.percents[i]
		}
	}
	return 0
}

// after is told of every allowed, counted call: email's used-th of the
// month of t, against limit. On a crossing call it queues the warning in
// the background (the call's answer does not wait for it).
func (w *warnings) after(email string, limit, used int64, t time.Time) {
	if w == nil {
		return
	}
	p := w.crossed(limit, used)
	if p == 0 || wire.IsTrialEmail(email) {
		// A trial key's address is made up (anyone may get a trial key):
		// no one reads it, and nothing an anonymous client does may make
		// the service send email anywhere.
		return
	}
	go w.send(wire.QuotaWarning{To: strings.Clone(email), Percent: p, Used: used, Limit: limit, Month: t})
}

// send queues one warning, retrying a failure a few times: a crossing
// happens once, so a warning not queued now is not queued at all.
func (w *warnings) send(q wire.QuotaWarning) {
	var err error
	for try := range w.tries {
		if try > 0 {
			time.Sleep(w.backoff << (try - 1))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var queued bool
		queued, err = w.queue(ctx, q)
		cancel()
		if err == nil {
			if queued {
				w.queued.Inc()
				w.log.Info("quota warning queued", "to", q.To, "percent", q.Percent, "month", q.Month.UTC().Format("2006-01"))
			} else {
				w.duplicate.Inc()
			}
			return
		}
	}
	w.failed.Inc()
	w.log.Error("quota warning not queued", "to", q.To, "percent", q.Percent, "err", err.Error())
}
