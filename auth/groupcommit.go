package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"pesto/shared/wire"
)

// The quota path after the decision: calls are counted by group commit
// (groupCommit.Count); each batch goes to Redis in one round trip, where a
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

// errLate: the counter script ran after its deadline and counted nothing.
var errLate = fmt.Errorf("counter script ran past its deadline: %w", context.DeadlineExceeded)

// countFunc counts the calls of a batch in one round trip, each counter in
// one atomic step, and sets each entry's before and granted (or its err).
// deadline (zero: none) is the script's: what is counted past it reaches
// its callers too late, and groupCommit refunds it.
type countFunc func(ctx context.Context, deadline time.Time, entries []entry) error

// refundFunc takes n counted calls back from a counter.
type refundFunc func(ctx context.Context, key string, n int64) error

// groupCommit is group commit for counters. Calls that arrive while a batch of
// their queue is on its way to Redis wait together, whatever their keys,
// and are counted by the next single script call: Redis runs one script per
// round trip instead of one per call, for a hot key and for many keys
// alike, and every call waits for at most one round trip besides its own.
// The quota stays exact: each script is atomic and grants calls in arrival
// order.
type groupCommit struct {
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

// policy is what a call is held to: its month's limit, and its key's rate.
type policy struct {
	limit int64     // the record's MonthlyLimit
	rate  wire.Rate // the record's own or the default; the zero Rate: none
}

// verdict is the counter step's answer for one call.
type verdict struct {
	// used is the calls counted this month: with this one when it is
	// allowed, else those counted when it was refused.
	used    int64
	allowed bool // the call was counted
	// limited: refused by the rate, while the month had room for it.
	limited bool
	// rated: the policy has a rate, whose window was read: rateLeft is how
	// many calls it lets through now, after this one, and rateWait the
	// time until that grows (for a refused call: until the next may go).
	rated    bool
	rateLeft int64
	rateWait time.Duration
}

// counterPolicy identifies an entry of a batch: a counter, and the policy
// its calls carry (a record changed meanwhile makes another entry).
type counterPolicy struct {
	key string
	pol policy
}

// entry is the calls of one counter and policy in a batch.
type entry struct {
	key     string
	pol     policy
	n       int64 // calls
	before  int64 // set by countFunc: calls counted before these
	granted int64 // set by countFunc: how many of the n it counted
	// set by countFunc when pol has a rate: calls its window let through
	// before these, and the time until that grows after them
	room int64
	wait time.Duration
	err  error // set by countFunc: this entry's own fault (nothing counted)
}

// batch is the calls counted by one script call.
type batch struct {
	entries  []entry
	index    map[counterPolicy]int // entry of each counter, once there are many
	deadline time.Time             // the earliest of its calls' script deadlines
	done     chan struct{}         // closed when the entries' results or err are set
	answered bool                  // the reply is in (under groupCommit.mu)
	gaveUp   []member              // calls answered 500 before the reply (under groupCommit.mu)
	err      error
}

// member is one call of a batch: the i-th call of entry e.
type member struct{ e, i int }

// batchIndexFrom is the size from which a batch looks its entries up in a
// map rather than by a scan.
const batchIndexFrom = 16

func newGroupCommit(count countFunc, refund refundFunc, groupOf func(string) uint16, onLost func(string, int64, error)) *groupCommit {
	return &groupCommit{count: count, refund: refund, groupOf: groupOf, onLost: onLost, queues: map[uint16]*queue{}}
}

// add joins a call to b and returns its place.
func (b *batch) add(key string, pol policy, deadline time.Time) member {
	if !deadline.IsZero() && (b.deadline.IsZero() || deadline.Before(b.deadline)) {
		b.deadline = deadline
	}
	e := -1
	if b.index != nil {
		if i, ok := b.index[counterPolicy{key, pol}]; ok {
			e = i
		}
	} else {
		for i := range b.entries {
			if b.entries[i].key == key && b.entries[i].pol == pol {
				e = i
				break
			}
		}
	}
	if e < 0 {
		e = len(b.entries)
		b.entries = append(b.entries, entry{key: key, pol: pol})
		if b.index != nil {
			b.index[counterPolicy{key, pol}] = e
		} else if len(b.entries) == batchIndexFrom {
			b.index = make(map[counterPolicy]int, 2*batchIndexFrom)
			for i := range b.entries {
				b.index[counterPolicy{b.entries[i].key, b.entries[i].pol}] = i
			}
		}
	}
	m := member{e, int(b.entries[e].n)}
	b.entries[e].n++
	return m
}

// Count counts one call under pol on the counter key: allowed, with the
// calls counted after this one, or refused when the limit was reached
// before it. The call is counted only if it is allowed; Count gives up,
// counting nothing, when ctx is done (ctx's deadline less countGrace is the
// script's deadline).
func (q *groupCommit) Count(ctx context.Context, key string, pol policy) (verdict, error) {
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
	m := b.add(key, pol, deadline)
	q.mu.Unlock()
	if !busy {
		go q.send(g, qu, b)
	}
	return q.wait(ctx, b, m)
}

// wait is the answer of member m of b, or ctx's error when the reply has not
// come in by then; a grant that comes later is refunded by send.
func (q *groupCommit) wait(ctx context.Context, b *batch, m member) (verdict, error) {
	select {
	case <-b.done:
	case <-ctx.Done():
		q.mu.Lock()
		if !b.answered {
			b.gaveUp = append(b.gaveUp, m)
			q.mu.Unlock()
			return verdict{}, ctx.Err()
		}
		q.mu.Unlock()
		<-b.done
	}
	if b.err != nil {
		return verdict{}, b.err
	}
	e := &b.entries[m.e]
	if e.err != nil {
		return verdict{}, e.err
	}
	return e.verdictOf(int64(m.i)), nil
}

// verdictOf is the verdict of the i-th call of e: the first e.granted are
// allowed; a refused one was refused by the rate when the month had room
// for it.
func (e *entry) verdictOf(i int64) verdict {
	v := verdict{used: e.before + e.granted}
	if i < e.granted {
		v.used, v.allowed = e.before+i+1, true
	}
	if !e.pol.rate.On() {
		return v
	}
	v.rated, v.limited = true, !v.allowed && i < e.pol.limit-e.before
	v.rateWait = e.wait
	if v.allowed {
		v.rateLeft = max(e.room-i-1, 0)
	} else {
		v.rateLeft = max(e.room-e.granted, 0)
	}
	return v
}

// send counts b and then each batch that filled behind it, until the
// queue is empty.
func (q *groupCommit) send(g uint16, qu *queue, b *batch) {
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

func (q *groupCommit) sendOne(b *batch) {
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
