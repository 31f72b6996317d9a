package main

import (
	"context"
	"sync/atomic"
	"time"
)

// deadlines hands out contexts for the Redis work of a request that expire
// between timeout-step and timeout after the call. Requests within the same
// step share one context, so that a request gets its deadline without a
// timer and a context of its own (half of the hot path's allocations).
type deadlines struct {
	timeout, step time.Duration
	cur           atomic.Pointer[sharedDeadline]
}

type sharedDeadline struct {
	ctx        context.Context
	cancel     context.CancelFunc // unused once shared: the deadline frees it
	freshUntil int64              // UnixNano after which a new context is made
}

func newDeadlines(timeout, step time.Duration) *deadlines {
	return &deadlines{timeout: timeout, step: step}
}

// context returns a context that expires at most timeout, and at least
// timeout-step, after now. It is never cancelled early: it frees its
// resources when its deadline passes.
func (d *deadlines) context(now time.Time) context.Context {
	s := d.cur.Load()
	if s != nil && now.UnixNano() < s.freshUntil {
		return s.ctx
	}
	ctx, cancel := context.WithDeadline(context.Background(), now.Add(d.timeout))
	next := &sharedDeadline{ctx: ctx, cancel: cancel, freshUntil: now.Add(d.step).UnixNano()}
	if d.cur.CompareAndSwap(s, next) {
		return ctx
	}
	next.cancel() // another request renewed it first
	return d.cur.Load().ctx
}
